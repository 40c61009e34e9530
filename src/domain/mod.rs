//! The nouns of warden: workspaces, profiles, providers and their ids, as the actors own
//! them and the API shows them. Validation rules that belong to a noun live beside it, so
//! the config file and the API apply the same ones.

/// A row id as a type of its own (`ExecutionId`, `ApprovalId`, …): shown and parsed as
/// the number, stored as an integer, serialised transparently.
macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The id after this one.
            pub fn next(self) -> Self {
                $name(self.0 + 1)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                text.parse().map($name)
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }
    };
}

/// Declares an enum of words (see [`Word`]): its words are written once, as the case
/// rule given, for serde and strum alike (a `tt`, so derives see a plain string, as
/// utoipa needs to follow serde's renaming). Extra derives (`Default`, `Hash`) go in
/// the brackets.
macro_rules! words {
    ($case:tt [$($extra:ident),*] $(#[$meta:meta])* pub enum $name:ident { $($body:tt)* }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
            strum::IntoStaticStr, strum::EnumString, strum::VariantArray $(, $extra)*
        )]
        #[serde(rename_all = $case)]
        #[strum(serialize_all = $case)]
        pub enum $name { $($body)* }
    };
}

mod agent;
mod approval;
mod changes;
mod event;
mod execution;
mod page;
mod retention;
mod session;
mod word;

pub use agent::*;
pub use approval::*;
pub use changes::*;
pub use event::*;
pub use execution::*;
pub use page::*;
pub use retention::*;
pub use session::*;
pub use word::*;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The current time, truncated to milliseconds so that what is stored and what is
/// returned compare equal.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// RFC 3339 UTC with milliseconds, the one text form of a timestamp in the database.
pub fn format_ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a timestamp written by [`format_ts`].
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

/// Names of workspaces, profiles and providers: 1–64 characters of `[A-Za-z0-9._-]`,
/// starting with a letter or digit, so they are safe in URLs, argv and file names.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    let ok_len = (1..=64).contains(&name.len());
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?} must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

row_id! {
    /// A workspace's id: the database row id.
    WorkspaceId
}

/// A named directory where executions run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    #[schema(value_type = i64)]
    pub id: WorkspaceId,
    pub name: String,
    /// Canonical absolute path of an existing directory.
    pub path: String,
    pub created_at: DateTime<Utc>,
}

/// How a workspace is named in a URL or a request: by id when the text is all digits,
/// else by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceKey {
    Id(WorkspaceId),
    Name(String),
}

impl WorkspaceKey {
    pub fn parse(text: &str) -> Self {
        match text.parse::<i64>() {
            Ok(id) if !text.starts_with('+') => WorkspaceKey::Id(WorkspaceId(id)),
            _ => WorkspaceKey::Name(text.to_owned()),
        }
    }

    pub fn matches(&self, workspace: &Workspace) -> bool {
        match self {
            WorkspaceKey::Id(id) => workspace.id == *id,
            WorkspaceKey::Name(name) => workspace.name == *name,
        }
    }
}

impl fmt::Display for WorkspaceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkspaceKey::Id(id) => write!(f, "{id}"),
            WorkspaceKey::Name(name) => f.write_str(name),
        }
    }
}

/// Resolves a directory the user named to its canonical absolute form, or says why it
/// cannot be used. Symlinks and `..` are resolved, so the stored path is the real one.
pub fn canonical_dir(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("path must not be empty".into());
    }
    let raw = Path::new(path);
    if !raw.is_absolute() {
        return Err(format!("path {path:?} must be absolute"));
    }
    let canonical = std::fs::canonicalize(raw).map_err(|e| format!("path {path:?} cannot be used: {e}"))?;
    if !canonical.is_dir() {
        return Err(format!("path {path:?} is not a directory"));
    }
    Ok(canonical)
}

words! {
    "snake_case" [Default]
    /// Whether an execution of a profile must wait for a human first.
    pub enum ApprovalPolicy {
        #[default]
        Never,
        Always,
    }
}

words! {
    "kebab-case" [Hash, Default]
    /// How an execution's processes are confined: a profile's `sandbox`.
    pub enum SandboxMode {
        /// Everything but warden's data dir (its token, database, logs, snapshots).
        #[default]
        ProtectData,
        /// As `protect-data`, and writes only in the work tree, the temp dirs and the agent's
        /// own state under `$HOME`.
        WorkspaceWrite,
        /// No confinement: the agent can reach everything the user can, warden's token too.
        Off,
    }
}

words! {
    "snake_case" [Default]
    /// Where an execution works: in its work tree as it is (`none`), or in a git worktree
    /// of its own on a branch of its own (`worktree`), whose work comes back only on
    /// request.
    pub enum Isolation {
        #[default]
        None,
        Worktree,
    }
}

words! {
    "kebab-case" [Default]
    /// The confinement an execution's processes got: its profile's mode, or `unavailable`
    /// when the kernel has no Landlock (the execution ran unconfined).
    pub enum SandboxApplied {
        ProtectData,
        WorkspaceWrite,
        /// Unsandboxed on purpose; also what executions from before sandboxes show.
        #[default]
        Off,
        Unavailable,
    }
}

impl SandboxApplied {
    /// A stored `sandbox` column; NULL (rows from before sandboxes) is `off`.
    pub fn from_stored(text: Option<&str>) -> Self {
        text.and_then(Self::parse).unwrap_or(Self::Off)
    }

    /// Whether the execution's processes could reach everything the user can.
    pub fn is_unconfined(self) -> bool {
        matches!(self, SandboxApplied::Off | SandboxApplied::Unavailable)
    }
}

impl From<SandboxMode> for SandboxApplied {
    fn from(mode: SandboxMode) -> Self {
        match mode {
            SandboxMode::ProtectData => SandboxApplied::ProtectData,
            SandboxMode::WorkspaceWrite => SandboxApplied::WorkspaceWrite,
            SandboxMode::Off => SandboxApplied::Off,
        }
    }
}

/// Where a profile or provider was defined; only `api` ones can be changed over the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Builtin,
    Config,
    Api,
}

/// The placeholders an argv template may use.
pub const PLACEHOLDERS: &[&str] =
    &["{prompt}", "{workspace}", "{execution_id}", "{session_id}", "{session_uuid}", "{turn}", "{agent_session_id}"];

/// What a profile says, as written in the config file or sent to the API.
#[derive(Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Provider whose capacity the profile's executions use.
    pub provider: String,
    /// argv template, e.g. `["claude", "-p", "{prompt}"]`.
    pub command: Vec<String>,
    /// argv template from a session's second turn on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_command: Option<Vec<String>>,
    #[serde(default)]
    pub approval: ApprovalPolicy,
    /// Seconds before a running execution is killed; none means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Extra environment for the agent process. Its values are never shown by the API.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How its executions' processes are confined (default `protect-data`).
    #[serde(default)]
    pub sandbox: SandboxMode,
    /// Where its executions work (default `none`: in the work tree as it is).
    #[serde(default)]
    pub isolation: Isolation,
    /// What its agent writes on stdout (default `text`); an agent's JSON format is read
    /// into agent events, a transcript, tokens and cost.
    #[serde(default)]
    pub format: AgentFormat,
}

impl fmt::Debug for ProfileSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileSpec")
            .field("provider", &self.provider)
            .field("command", &self.command)
            .field("continue_command", &self.continue_command)
            .field("approval", &self.approval)
            .field("timeout_s", &self.timeout_s)
            .field("env", &format_args!("<{} vars hidden>", self.env.len()))
            .field("sandbox", &self.sandbox)
            .field("isolation", &self.isolation)
            .field("format", &self.format)
            .finish()
    }
}

impl ProfileSpec {
    /// Checks the spec on its own; whether the provider exists is the caller's question.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("provider", &self.provider)?;
        validate_argv("command", &self.command)?;
        if let Some(cont) = &self.continue_command {
            validate_argv("continue_command", cont)?;
        }
        if self.timeout_s == Some(0) {
            return Err("timeout_s must be at least 1 (leave it out for no limit)".into());
        }
        validate_env(&self.env)
    }
}

fn validate_argv(field: &str, argv: &[String]) -> Result<(), String> {
    match argv.first() {
        None => Err(format!("{field} must name a program")),
        Some(program) if program.trim().is_empty() => Err(format!("{field}'s program must not be empty")),
        Some(_) if argv.iter().any(|a| a.contains('\0')) => Err(format!("{field} must not contain NUL bytes")),
        Some(_) => Ok(()),
    }
}

/// Environment variable names are what a shell accepts: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for (key, value) in env {
        let ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!("environment variable name {key:?} is not valid"));
        }
        if value.contains('\0') {
            return Err(format!("environment variable {key} must not contain NUL bytes"));
        }
    }
    Ok(())
}

/// A named way to run an agent.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub name: String,
    #[serde(flatten)]
    pub spec: ProfileSpec,
    pub origin: Origin,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("spec", &self.spec)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Profile {
    /// The built-in `shell` profile: `sh -c {prompt}` on the `local` provider.
    pub fn builtin_shell() -> Self {
        Profile {
            name: "shell".into(),
            spec: ProfileSpec {
                provider: "local".into(),
                command: vec!["sh".into(), "-c".into(), "{prompt}".into()],
                continue_command: None,
                approval: ApprovalPolicy::Never,
                timeout_s: None,
                env: BTreeMap::new(),
                sandbox: SandboxMode::default(),
                isolation: Isolation::None,
                format: AgentFormat::Text,
            },
            origin: Origin::Builtin,
        }
    }
}

/// A profile as the API shows it: its env by names only (values may be secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    pub name: String,
    pub provider: String,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_command: Option<Vec<String>>,
    pub approval: ApprovalPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// The names of the variables the profile sets; their values are never shown.
    pub env: Vec<String>,
    pub sandbox: SandboxMode,
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub format: AgentFormat,
    pub origin: Origin,
    /// Whether its program is found (a path that exists, or on the daemon's PATH).
    #[serde(default)]
    pub installed: bool,
}

impl From<&Profile> for ProfileView {
    fn from(profile: &Profile) -> Self {
        let spec = &profile.spec;
        ProfileView {
            name: profile.name.clone(),
            provider: spec.provider.clone(),
            command: spec.command.clone(),
            continue_command: spec.continue_command.clone(),
            approval: spec.approval,
            timeout_s: spec.timeout_s,
            env: spec.env.keys().cloned().collect(),
            sandbox: spec.sandbox,
            isolation: spec.isolation,
            format: spec.format,
            origin: profile.origin,
            installed: spec.command.first().is_some_and(|program| crate::agent::profiles::program_installed(program)),
        }
    }
}

/// The largest integer a JSON number holds exactly (2^53 - 1).
pub const MAX_JSON_INTEGER: u64 = (1 << 53) - 1;

/// A provider's capacity: how many executions at once, how many starts a minute, and
/// what its agents may spend a UTC day before new starts wait.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    /// Executions running at once, 0 to 100000; 0 = unlimited.
    #[serde(default = "default_max_concurrent")]
    #[schema(maximum = 100000)]
    pub max_concurrent: u32,
    /// Starts per minute (token bucket), 0 to 100000; 0 = unlimited.
    #[serde(default)]
    #[schema(maximum = 100000)]
    pub rate_per_minute: u32,
    /// Dollars its agents may spend a UTC day (as they report it); once reached, new
    /// starts wait until the day turns or the limit is raised. None: no budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub max_cost_usd_per_day: Option<f64>,
    /// Tokens (input of every kind and output) its agents may use a UTC day; as above.
    /// At most 2^53 - 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 9007199254740991_u64)]
    pub max_tokens_per_day: Option<u64>,
}

impl ProviderLimits {
    /// The largest limit accepted (anything above is as good as unlimited).
    pub const MAX: u32 = 100_000;

    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent > Self::MAX || self.rate_per_minute > Self::MAX {
            return Err(format!("max_concurrent and rate_per_minute must be 0 to {} (0 = unlimited)", Self::MAX));
        }
        if self.max_cost_usd_per_day.is_some_and(|cost| !cost.is_finite() || cost < 0.0) {
            return Err("max_cost_usd_per_day must be a number of dollars, 0 or more".into());
        }
        if self.max_tokens_per_day.is_some_and(|tokens| tokens > MAX_JSON_INTEGER) {
            return Err(format!("max_tokens_per_day must be at most {MAX_JSON_INTEGER}"));
        }
        Ok(())
    }

    /// Whether what was spent today reaches a budget.
    pub fn budget_reached(&self, spent: &Spend) -> bool {
        self.max_cost_usd_per_day.is_some_and(|max| spent.cost_usd >= max)
            || self.max_tokens_per_day.is_some_and(|max| spent.input_tokens.saturating_add(spent.output_tokens) >= max)
    }
}

fn default_max_concurrent() -> u32 {
    ProviderLimits::default().max_concurrent
}

impl Default for ProviderLimits {
    /// A provider nobody configured: four at a time, no start rate limit.
    fn default() -> Self {
        ProviderLimits { max_concurrent: 4, rate_per_minute: 0, max_cost_usd_per_day: None, max_tokens_per_day: None }
    }
}

/// A provider as the API shows it: its limits and its live usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provider {
    pub name: String,
    #[serde(flatten)]
    pub limits: ProviderLimits,
    pub origin: Origin,
    /// Executions of this provider running (or paused) now.
    pub running: u32,
    /// Executions waiting in this provider's queue.
    pub queued: u32,
    /// Executions waiting for a human before they may queue.
    pub pending_approval: u32,
    /// What its agents spent this UTC day.
    pub spend_today: Spend,
    /// A daily budget is reached: new starts wait (`waiting_for: "budget"`).
    pub budget_reached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_url_and_argv_safe() {
        assert!(validate_name("workspace", "my-app_2.0").is_ok());
        for bad in ["", "-x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(validate_name("workspace", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn workspace_keys_are_ids_when_numeric() {
        assert_eq!(WorkspaceKey::parse("12"), WorkspaceKey::Id(WorkspaceId(12)));
        assert_eq!(WorkspaceKey::parse("app"), WorkspaceKey::Name("app".into()));
        assert_eq!(WorkspaceKey::parse("+1"), WorkspaceKey::Name("+1".into()));
    }

    #[test]
    fn profile_env_is_hidden_from_debug() {
        let mut profile = Profile::builtin_shell();
        profile.spec.env.insert("API_KEY".into(), "sk-secret".into());
        let shown = format!("{profile:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("1 vars hidden"), "{shown}");
    }

    #[test]
    fn relative_and_missing_dirs_are_refused() {
        assert!(canonical_dir("relative/dir").is_err());
        assert!(canonical_dir("/definitely/not/here").is_err());
        assert_eq!(canonical_dir("/tmp/../tmp").unwrap(), std::fs::canonicalize("/tmp").unwrap());
    }
}
