//! Executions: one run of a profile in a directory, its states and its output lines, and
//! how a profile's argv template becomes the argv that runs.

use std::collections::BTreeMap;
use std::fmt;

use super::{SessionId, Word};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

row_id! {
    /// An execution's id: assigned in creation order by the ExecutionMonitor.
    ExecutionId
}

words! {
    "snake_case" [Hash]
    /// Where an execution is in its life. The last six are final.
    pub enum ExecutionStatus {
        PendingApproval,
        Queued,
        Running,
        Paused,
        Succeeded,
        Failed,
        Cancelled,
        Denied,
        TimedOut,
        Interrupted,
    }
}

impl ExecutionStatus {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ExecutionStatus::PendingApproval
                | ExecutionStatus::Queued
                | ExecutionStatus::Running
                | ExecutionStatus::Paused
        )
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of `POST /api/v1/executions`.
#[derive(Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExecution {
    /// What the agent is asked; fills `{prompt}`. Passed as one argv element, never
    /// through a shell, so it may hold any characters.
    pub prompt: String,
    /// Profile name (default `shell`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Workspace id or name. Exactly one of `workspace` and `cwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// An existing absolute directory. Exactly one of `workspace` and `cwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment, on top of the profile's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds of running (pauses excluded) before it is killed; default: the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// `worktree` runs it in a git worktree of its own; default: the profile's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<super::Isolation>,
    /// With `worktree`: the revision its branch starts from (e.g. `HEAD`); default: the
    /// work tree as the user sees it, uncommitted and untracked files included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

impl fmt::Debug for NewExecution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewExecution")
            .field("profile", &self.profile)
            .field("workspace", &self.workspace)
            .field("cwd", &self.cwd)
            .field("prompt_len", &self.prompt.len())
            .field("env", &format_args!("<{} vars hidden>", self.env.len()))
            .field("timeout_s", &self.timeout_s)
            .field("isolation", &self.isolation)
            .field("base", &self.base)
            .finish()
    }
}

/// An execution as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Execution {
    #[schema(value_type = i64)]
    pub id: ExecutionId,
    pub status: ExecutionStatus,
    pub profile: String,
    pub provider: String,
    /// The workspace's name, or null when the execution ran in a plain `cwd`.
    pub workspace: Option<String>,
    pub cwd: String,
    pub prompt: String,
    /// The argv that runs (the profile's template, filled).
    pub argv: Vec<String>,
    pub timeout_s: Option<u64>,
    pub exit_code: Option<i32>,
    /// Why it failed or ended, in words (e.g. command not found).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How many executions of the same provider start before this one; null unless queued.
    pub queue_position: Option<u32>,
    #[schema(value_type = Option<i64>)]
    pub retry_of: Option<ExecutionId>,
    #[schema(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
    /// The approval that gated this execution's start (profiles with `approval = "always"`).
    #[schema(value_type = Option<i64>)]
    pub approval_id: Option<super::ApprovalId>,
    /// An approval the running agent waits on now (e.g. a Claude Code tool call).
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub waiting_approval_id: Option<super::ApprovalId>,
    /// What it changed in its git work tree: null before it starts and when its cwd is
    /// not inside a git work tree. `GET …/changes` lists the files.
    #[serde(default)]
    pub changes: Option<super::ChangesSummary>,
    /// How its processes are confined: its profile's `sandbox` until it starts, then
    /// what was applied (`unavailable` when the kernel could not confine it).
    #[serde(default)]
    pub sandbox: super::SandboxApplied,
    /// `worktree`: it works in a git worktree of its own, on `branch`, from `base`.
    #[serde(default)]
    pub isolation: super::Isolation,
    /// Its branch (`warden/<id>-<words>`), once its worktree is made; null after discard.
    #[serde(default)]
    pub branch: Option<String>,
    /// Its worktree's directory, once made; null after discard.
    #[serde(default)]
    pub worktree: Option<String>,
    /// The commit its branch starts at: its changes are counted from there.
    #[serde(default)]
    pub base: Option<String>,
    /// The branch its base came from: where `merge` goes unless told otherwise (null: a
    /// detached HEAD, or a base that is no branch).
    #[serde(default)]
    pub base_branch: Option<String>,
    /// The revision its worktree was asked to start from (null: the user's work tree);
    /// kept with its row until its worktree is made, not shown.
    #[serde(skip)]
    pub base_ref: Option<String>,
    /// Why a queued execution is not starting though its turn may have come: `budget`
    /// (its provider's daily budget is reached). Null otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<WaitingFor>,
    /// What its agent has done so far, read from its output (null for a `text` profile).
    /// Boxed: most executions have none, and every execution is cloned often.
    #[serde(default)]
    pub agent: Option<Box<super::AgentSummary>>,
    /// When retention (or `warden prune`) removed its output and events; this row is
    /// what is left of it. Null while they are all there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_at: Option<DateTime<Utc>>,
}

words! {
    "snake_case" []
    /// What holds a queued execution back beyond its place in the queue.
    pub enum WaitingFor {
        Budget,
    }
}

words! {
    "snake_case" []
    /// Which stream an output line came from.
    pub enum OutputStream {
        Stdout,
        Stderr,
    }
}

impl OutputStream {
    /// The stream a stored `stream` column names (the schema allows only these two).
    pub fn from_stored(column: &str) -> OutputStream {
        Self::parse(column).unwrap_or(OutputStream::Stdout)
    }
}

/// One line of output, numbered from 1 across both streams in the order read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputLine {
    pub n: u64,
    pub stream: OutputStream,
    pub text: String,
    pub ts: DateTime<Utc>,
}

/// `GET /api/v1/executions` filters.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExecutionFilter {
    /// Comma-separated statuses, e.g. `queued,running`.
    #[serde(default)]
    #[param(value_type = Option<Vec<ExecutionStatus>>, style = Form, explode = false)]
    pub status: super::Words<ExecutionStatus>,
    /// Workspace name.
    pub workspace: Option<String>,
    pub profile: Option<String>,
    pub provider: Option<String>,
    #[param(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
}

/// The session turn an execution is (for `{session_id}`, `{session_uuid}`, `{turn}` and
/// the choice between `command` and `continue_command`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTurn {
    pub session_id: SessionId,
    pub session_uuid: String,
    /// 1 for the first turn.
    pub turn: u32,
    /// The agent's own conversation id from the previous turn, if it told one.
    pub agent_session_id: Option<String>,
    /// What that conversation had used so far, where the agent reports totals over it.
    pub conversation_tokens: Option<super::Tokens>,
}

/// What the placeholders of an argv template stand for.
pub struct TemplateValues<'a> {
    pub prompt: &'a str,
    pub workspace: &'a str,
    pub execution_id: ExecutionId,
    pub session_id: Option<SessionId>,
    pub session_uuid: Option<&'a str>,
    pub turn: Option<u32>,
    pub agent_session_id: Option<&'a str>,
}

/// Whether a template uses a placeholder.
pub fn uses_placeholder(template: &[String], placeholder: &str) -> bool {
    template.iter().any(|element| element.contains(placeholder))
}

/// Fills a template. Placeholders are replaced inside each element; nothing is split or
/// interpreted, so a prompt with quotes, `$()` or newlines stays one argument.
pub fn fill_template(template: &[String], values: &TemplateValues<'_>) -> Vec<String> {
    let id = values.execution_id.to_string();
    let session_id = values.session_id.map(|s| s.to_string()).unwrap_or_default();
    let turn = values.turn.map(|t| t.to_string()).unwrap_or_default();
    let pairs: [(&str, &str); 7] = [
        ("{prompt}", values.prompt),
        ("{workspace}", values.workspace),
        ("{execution_id}", &id),
        ("{session_id}", &session_id),
        ("{session_uuid}", values.session_uuid.unwrap_or("")),
        ("{turn}", &turn),
        ("{agent_session_id}", values.agent_session_id.unwrap_or("")),
    ];
    template.iter().map(|element| substitute(element, &pairs)).collect()
}

/// One left-to-right pass, so a value that itself contains `{prompt}` is not expanded.
fn substitute(element: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(element.len());
    let mut rest = element;
    'scan: while !rest.is_empty() {
        if rest.starts_with('{') {
            for (name, value) in pairs {
                if let Some(after) = rest.strip_prefix(name) {
                    out.push_str(value);
                    rest = after;
                    continue 'scan;
                }
            }
        }
        let next = rest.char_indices().nth(1).map(|(i, _)| i).unwrap_or(rest.len());
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(prompt: &str) -> TemplateValues<'_> {
        TemplateValues {
            prompt,
            workspace: "/w",
            execution_id: ExecutionId(7),
            session_id: None,
            session_uuid: None,
            turn: None,
            agent_session_id: None,
        }
    }

    #[test]
    fn placeholders_fill_single_elements_verbatim() {
        let template: Vec<String> =
            ["agent", "-p", "{prompt}", "--id={execution_id}", "{workspace}/x"].map(String::from).into();
        let prompt = "it's \"$(rm -rf /)\"\nline two {workspace} ✓";
        let argv = fill_template(&template, &values(prompt));
        assert_eq!(argv, vec!["agent", "-p", prompt, "--id=7", "/w/x"]);
    }

    #[test]
    fn statuses_know_which_are_final() {
        assert!(!ExecutionStatus::Paused.is_final());
        assert!(ExecutionStatus::TimedOut.is_final());
    }
}
