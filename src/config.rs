//! The daemon's configuration: `config.toml` in the data dir, then command-line
//! overrides, validated once at start so that a bad key is named before anything runs.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::{validate_name, Profile, ProfileSpec, ProviderLimits};
use crate::home::Home;

/// The port warden listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7373;

/// What `config.toml` may hold. Every section and key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    approvals: ApprovalsSection,
    #[serde(default)]
    changes: ChangesSection,
    #[serde(default)]
    worktrees: WorktreesSection,
    #[serde(default)]
    providers: BTreeMap<String, ProviderLimits>,
    #[serde(default)]
    profiles: BTreeMap<String, ProfileSpec>,
    #[serde(default)]
    notify: Vec<NotifyTarget>,
    #[serde(default)]
    retention: RetentionSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetentionSection {
    /// Prune at all (a pass an hour); `warden prune` works either way.
    enabled: bool,
    /// Days a final execution keeps its output and events; fractions are allowed.
    output_days: f64,
    /// The newest executions kept whole whatever their age (and whatever the size).
    keep_last: u64,
    /// Past this size the oldest executions lose their output too, whatever their age.
    max_db_mb: Option<u64>,
}

impl Default for RetentionSection {
    fn default() -> Self {
        let defaults = RetentionSettings::default();
        RetentionSection {
            enabled: defaults.enabled,
            output_days: defaults.output_age.as_secs_f64() / 86_400.0,
            keep_last: defaults.keep_last,
            max_db_mb: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    host: String,
    port: u16,
    max_clients: u32,
    shutdown_grace_s: u64,
    cors_origins: Vec<String>,
    workers: usize,
    ws_ping_interval_s: u64,
    ws_timeout_s: u64,
    sse_keepalive_s: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            max_clients: 10,
            shutdown_grace_s: 30,
            cors_origins: Vec::new(),
            workers: 2,
            ws_ping_interval_s: 30,
            ws_timeout_s: 60,
            sse_keepalive_s: 15,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ApprovalsSection {
    /// Seconds an approval waits before its default applies.
    timeout_s: u64,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        ApprovalsSection { timeout_s: 600 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ChangesSection {
    /// Snapshot git work trees at each execution's start and end.
    enabled: bool,
    /// The longest an execution's start waits for its start snapshot.
    start_timeout_ms: u64,
    /// A running execution's live snapshot is reused for this long.
    live_interval_ms: u64,
    /// Diffs longer than this are cut.
    max_diff_bytes: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WorktreesSection {
    /// Where isolated executions' worktrees are made (outside the data dir, which the
    /// sandbox hides from agents). Default: `warden-worktrees` beside the data dir.
    dir: Option<PathBuf>,
    /// Days after which a final execution's worktree is removed (its branch stays until
    /// merged or discarded). Default 7; fractions are allowed.
    keep_days: Option<f64>,
}

impl Default for ChangesSection {
    fn default() -> Self {
        let defaults = ChangeSettings::default();
        ChangesSection {
            enabled: defaults.enabled,
            start_timeout_ms: defaults.start_timeout.as_millis() as u64,
            live_interval_ms: defaults.live_interval.as_millis() as u64,
            max_diff_bytes: defaults.max_diff_bytes,
        }
    }
}

/// Overrides from the command line; `None` leaves the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub allow_remote: bool,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub home: Home,
    pub host: IpAddr,
    /// The port asked for; 0 lets the system choose. A busy port falls back to a free one.
    pub port: u16,
    pub allow_remote: bool,
    pub max_clients: u32,
    pub shutdown_grace: Duration,
    /// How long a cancelled or timed-out process group gets between SIGTERM and SIGKILL
    /// (5 s; not in the file, tests shorten it).
    pub kill_grace: Duration,
    /// How long an approval waits for a human unless its request says otherwise.
    pub approval_timeout: Duration,
    /// Origins allowed to make cross-origin requests; none by default.
    pub cors_origins: Vec<String>,
    /// HTTP worker threads.
    pub workers: usize,
    /// Pings, client timeout and SSE keep-alives of live clients.
    pub heartbeat: Heartbeat,
    /// Backpressure thresholds of live clients.
    pub flow_limits: FlowLimits,
    /// Providers from the file, plus `local`.
    pub providers: BTreeMap<String, ProviderLimits>,
    /// Profiles from the file, plus the built-in `shell`.
    pub profiles: BTreeMap<String, Profile>,
    /// Work tree snapshots and diffs.
    pub changes: ChangeSettings,
    /// Where notifications go (`[[notify]]`).
    pub notify: Vec<NotifyTarget>,
    /// What is pruned, and when (`[retention]`).
    pub retention: RetentionSettings,
}

impl Config {
    /// Reads `config.toml` from the home (if there is one) and applies the overrides.
    pub fn load(home: Home, overrides: &Overrides) -> Result<Config, String> {
        let path = home.config_path();
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => parse_file(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Config::from_file(home, file, overrides).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Defaults only, for tests and first runs: no file is read.
    pub fn defaults(home: Home) -> Config {
        Config::from_file(home, ConfigFile::default(), &Overrides::default()).expect("the defaults are valid")
    }

    fn from_file(home: Home, file: ConfigFile, overrides: &Overrides) -> Result<Config, String> {
        let server = file.server;
        let host_text = overrides.host.clone().unwrap_or(server.host);
        let host = parse_host(&host_text)?;
        if !host.is_loopback() && !overrides.allow_remote {
            return Err(format!(
                "server.host = {host_text:?} is not a loopback address; warden listens on the network only with --allow-remote"
            ));
        }
        if !(1..=crate::domain::MAX_TIMEOUT_S).contains(&file.approvals.timeout_s) {
            return Err("approvals.timeout_s must be between 1 and 86400".into());
        }
        if server.max_clients == 0 {
            return Err("server.max_clients must be at least 1".into());
        }
        if server.ws_ping_interval_s == 0 || server.ws_timeout_s <= server.ws_ping_interval_s {
            return Err("server.ws_timeout_s must be longer than server.ws_ping_interval_s (and both above 0)".into());
        }
        if server.sse_keepalive_s == 0 {
            return Err("server.sse_keepalive_s must be at least 1".into());
        }
        if server.workers == 0 || server.workers > 64 {
            return Err("server.workers must be between 1 and 64".into());
        }
        let changes = file.changes;
        for (i, target) in file.notify.iter().enumerate() {
            target.validate().map_err(|e| format!("notify entry {}: {e}", i + 1))?;
        }
        let notify = file.notify;
        let retention = file.retention;
        if !(retention.output_days > 0.0 && retention.output_days <= 36_500.0) {
            return Err("retention.output_days must be above 0 and at most 36500".into());
        }
        if retention.max_db_mb.is_some_and(|mb| !(1..=1 << 30).contains(&mb)) {
            return Err("retention.max_db_mb must be between 1 and 1073741824".into());
        }
        let worktrees_dir = match file.worktrees.dir {
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => return Err(format!("worktrees.dir must be an absolute path, not {}", dir.display())),
            None => home.dir().parent().unwrap_or(home.dir()).join("warden-worktrees"),
        };
        if worktrees_dir.starts_with(home.dir()) {
            return Err("worktrees.dir must be outside the data dir (the sandbox hides it from agents)".into());
        }
        let keep_worktrees = match file.worktrees.keep_days.unwrap_or(7.0) {
            days if (0.0..=36_500.0).contains(&days) => Ok(Duration::from_secs_f64(days * 86_400.0)),
            _ => Err("worktrees.keep_days must be between 0 and 36500".to_owned()),
        };
        if !(1..=600_000).contains(&changes.start_timeout_ms) {
            return Err("changes.start_timeout_ms must be between 1 and 600000".into());
        }
        if changes.max_diff_bytes < 1024 {
            return Err("changes.max_diff_bytes must be at least 1024".into());
        }
        for origin in &server.cors_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!(
                    "server.cors_origins entry {origin:?} must be an origin like http://localhost:3000"
                ));
            }
        }

        let mut providers = file.providers;
        for (name, limits) in &providers {
            validate_name("provider", name)
                .and_then(|()| limits.validate())
                .map_err(|e| format!("providers.{name}: {e}"))?;
        }
        providers.entry("local".into()).or_default();

        let mut profiles = BTreeMap::new();
        for ready in std::iter::once(Profile::builtin_shell()).chain(crate::agent::profiles::ready_profiles()) {
            providers.entry(ready.spec.provider.clone()).or_default();
            profiles.insert(ready.name.clone(), ready);
        }
        for (name, spec) in file.profiles {
            validate_name("profile", &name).map_err(|e| format!("profiles.{name}: {e}"))?;
            spec.validate().map_err(|e| format!("profiles.{name}: {e}"))?;
            // A profile may name a provider the file does not configure: it gets the
            // default limits, so a one-line profile works.
            providers.entry(spec.provider.clone()).or_default();
            profiles.insert(name.clone(), Profile { name, spec, origin: crate::domain::Origin::Config });
        }

        Ok(Config {
            home,
            host,
            port: overrides.port.unwrap_or(server.port),
            allow_remote: overrides.allow_remote,
            max_clients: server.max_clients,
            shutdown_grace: Duration::from_secs(server.shutdown_grace_s),
            kill_grace: Duration::from_secs(5),
            approval_timeout: Duration::from_secs(file.approvals.timeout_s),
            cors_origins: server.cors_origins,
            workers: server.workers,
            heartbeat: Heartbeat {
                ping_interval: Duration::from_secs(server.ws_ping_interval_s),
                client_timeout: Duration::from_secs(server.ws_timeout_s),
                sse_keepalive: Duration::from_secs(server.sse_keepalive_s),
            },
            flow_limits: FlowLimits::default(),
            providers,
            profiles,
            changes: ChangeSettings {
                enabled: changes.enabled,
                start_timeout: Duration::from_millis(changes.start_timeout_ms),
                live_interval: Duration::from_millis(changes.live_interval_ms),
                max_diff_bytes: changes.max_diff_bytes,
                worktrees: worktrees_dir,
                keep_worktrees: keep_worktrees?,
                ..ChangeSettings::default()
            },
            notify,
            retention: RetentionSettings {
                enabled: retention.enabled,
                output_age: Duration::from_secs_f64(retention.output_days * 86_400.0),
                keep_last: retention.keep_last,
                max_db_bytes: retention.max_db_mb.map(|mb| mb << 20),
                ..RetentionSettings::default()
            },
        })
    }
}

fn parse_file(path: &Path, text: &str) -> Result<ConfigFile, String> {
    toml::from_str(text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))
}

fn parse_host(text: &str) -> Result<IpAddr, String> {
    if text == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    text.parse().map_err(|_| format!("server.host = {text:?} is not an IP address (or localhost)"))
}

// The settings the actors run with: defined here, with the file they are read from,
// so that the configuration depends on no actor (the actors depend on it).

/// A `[[notify]]` entry of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// Where to POST (http or https); none with `desktop = true`.
    #[serde(default)]
    pub url: Option<String>,
    /// A desktop notification instead (`notify-send`, or `osascript` on macOS), when the
    /// daemon runs in a desktop session.
    #[serde(default)]
    pub desktop: bool,
    /// Which events: a type (`approval.requested`), a prefix (`execution.*`), then
    /// optional `field=value` conditions on the event's data, values separated by `|`
    /// (`execution.finished status=failed|timed_out`). Default: `approval.requested`.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Signs each webhook body: `X-Warden-Signature: sha256=<hex HMAC-SHA256>`.
    #[serde(default)]
    pub secret: Option<String>,
    /// `json` (default: the event and a line of text) or `ntfy` (the text as the body,
    /// with ntfy's title, priority and tags headers).
    #[serde(default)]
    pub format: NotifyFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyFormat {
    #[default]
    Json,
    Ntfy,
}

fn default_events() -> Vec<String> {
    vec!["approval.requested".into()]
}

impl NotifyTarget {
    /// Checks the entry on its own, for the config loader.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.url, self.desktop) {
            (Some(url), false) => {
                let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("url {url:?} must be http or https"));
                }
            }
            (None, true) => {}
            _ => return Err("give either url or desktop = true".into()),
        }
        self.events.iter().try_for_each(|rule| EventRule::parse(rule).map(|_| ()))
    }

    /// How it is named in logs and `warden notify test`: its URL without credentials,
    /// query or path beyond the host (a secret may hide there), or `desktop`.
    pub fn label(&self) -> String {
        match self.url.as_deref().and_then(|url| reqwest::Url::parse(url).ok()) {
            Some(url) => format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), port_of(&url)),
            None => "desktop".into(),
        }
    }
}

fn port_of(url: &reqwest::Url) -> String {
    url.port().map(|p| format!(":{p}")).unwrap_or_default()
}

/// One `events` entry of a `[[notify]]` target, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRule {
    kind: String,
    /// `field` must be one of the values.
    conditions: Vec<(String, Vec<String>)>,
}

impl EventRule {
    pub fn parse(text: &str) -> Result<EventRule, String> {
        let mut words = text.split_whitespace();
        let kind = words.next().ok_or("an empty events entry")?.to_owned();
        let conditions = words
            .map(|word| match word.split_once('=') {
                Some((field, values)) if !field.is_empty() && !values.is_empty() => {
                    Ok((field.to_owned(), values.split('|').map(str::to_owned).collect()))
                }
                _ => Err(format!("events entry {text:?}: {word:?} is not field=value")),
            })
            .collect::<Result<_, _>>()?;
        Ok(EventRule { kind, conditions })
    }

    pub fn wants_kind(&self, kind: &str) -> bool {
        self.kind == "*" || self.kind == kind || self.kind.strip_suffix('*').is_some_and(|p| kind.starts_with(p))
    }

    pub fn matches(&self, kind: &str, data: &serde_json::Value) -> bool {
        self.wants_kind(kind)
            && self.conditions.iter().all(|(field, values)| {
                let found = match &data[field.as_str()] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => return false,
                    other => other.to_string(),
                };
                values.contains(&found)
            })
    }
}

/// Limits of the tracker, from `[changes]` in the config.
#[derive(Debug, Clone)]
pub struct ChangeSettings {
    /// Off: no snapshots are taken (`changes` stays null).
    pub enabled: bool,
    /// The longest an execution's start waits for its start snapshot.
    pub start_timeout: Duration,
    /// The longest any other snapshot may take.
    pub snapshot_timeout: Duration,
    /// A running execution's live snapshot is reused for this long.
    pub live_interval: Duration,
    /// Diffs longer than this are cut, with a marker.
    pub max_diff_bytes: usize,
    /// Where isolated executions' worktrees are made (`[worktrees] dir`).
    pub worktrees: PathBuf,
    /// How long a final execution's worktree is kept (`[worktrees] keep_days`).
    pub keep_worktrees: Duration,
}

impl Default for ChangeSettings {
    fn default() -> Self {
        ChangeSettings {
            enabled: true,
            start_timeout: Duration::from_secs(5),
            snapshot_timeout: Duration::from_secs(300),
            live_interval: Duration::from_secs(2),
            max_diff_bytes: 1 << 20,
            worktrees: std::env::temp_dir().join("warden-worktrees"),
            keep_worktrees: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What retention prunes and when, from `[retention]` (the Retention actor).
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Passes run by themselves (`warden prune` runs one either way).
    pub enabled: bool,
    /// A final execution older than this loses its output and events.
    pub output_age: Duration,
    /// The newest executions are kept whole whatever their age or the size.
    pub keep_last: u64,
    /// Past this many bytes in use, the oldest executions are pruned whatever their age.
    pub max_db_bytes: Option<u64>,
    /// When the first pass runs after the start, and how often the next ones do.
    pub first_pass_after: Duration,
    pub period: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            enabled: true,
            output_age: Duration::from_secs(30 * 86_400),
            keep_last: 100,
            max_db_bytes: None,
            first_pass_after: Duration::from_secs(60),
            period: Duration::from_secs(3600),
        }
    }
}

/// Backpressure thresholds of a live client, in bytes (`ClientRegistry`).
#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    /// Above this, low-priority events are skipped.
    pub high_water: usize,
    /// Below this, a congested client recovers and hears what it missed.
    pub low_water: usize,
    /// Above this, the client is disconnected.
    pub hard_cap: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits { high_water: 64 * 1024, low_water: 16 * 1024, hard_cap: 4 * 1024 * 1024 }
    }
}

/// Liveness settings of live clients.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// How often the server pings a WebSocket client.
    pub ping_interval: Duration,
    /// A client silent for this long (no pong, no frame) is dropped.
    pub client_timeout: Duration,
    /// How often an SSE stream gets a `: keepalive` comment.
    pub sse_keepalive: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            ping_interval: Duration::from_secs(30),
            client_timeout: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, overrides: &Overrides) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
        Config::load(Home::new(dir.path().to_path_buf()), overrides)
    }

    #[test]
    fn no_file_means_defaults_with_shell_and_local() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(Home::new(dir.path().into()), &Overrides::default()).unwrap();
        assert_eq!(config.port, DEFAULT_PORT);
        assert!(config.profiles.contains_key("shell"));
        assert_eq!(config.providers["local"], ProviderLimits::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load("[server]\nprot = 1\n", &Overrides::default()).unwrap_err();
        assert!(err.contains("prot"), "{err}");
        let err =
            load("[profiles.x]\nprovider = \"a\"\ncommand = [\"a\"]\nshell = 1\n", &Overrides::default()).unwrap_err();
        assert!(err.contains("shell"), "{err}");
    }

    #[test]
    fn profiles_bring_their_providers_and_are_validated() {
        let config = load(
            "[profiles.claude]\nprovider = \"anthropic\"\ncommand = [\"claude\", \"-p\", \"{prompt}\"]\napproval = \"always\"\n",
            &Overrides::default(),
        )
        .unwrap();
        assert!(config.providers.contains_key("anthropic"));
        let err = load("[profiles.bad]\nprovider = \"a\"\ncommand = []\n", &Overrides::default()).unwrap_err();
        assert!(err.contains("profiles.bad") && err.contains("command"), "{err}");
    }

    #[test]
    fn remote_host_needs_the_flag() {
        let err = load("[server]\nhost = \"0.0.0.0\"\n", &Overrides::default()).unwrap_err();
        assert!(err.contains("--allow-remote"), "{err}");
        let ok = load("[server]\nhost = \"0.0.0.0\"\n", &Overrides { allow_remote: true, ..Default::default() });
        assert!(ok.is_ok());
    }

    proptest::proptest! {
        /// Whatever a config file holds, loading it answers Ok or a message; it never panics.
        #[test]
        fn any_config_file_loads_or_is_refused_with_a_message(text in "(\\[[a-z.]{0,20}\\]\n|[a-z_]{1,16} = (\"[^\"]{0,12}\"|-?[0-9]{1,22}|\\[\\]|true)\n|.{0,30}\n){0,12}") {
            if let Err(message) = load(&text, &Overrides::default()) {
                proptest::prop_assert!(!message.is_empty());
            }
        }
    }
}
