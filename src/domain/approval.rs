//! Approvals: a question for a human about risky work, with a deadline and a default.

use super::{ExecutionId, SessionId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest an approval may wait, in seconds.
pub const MAX_TIMEOUT_S: u64 = 86_400;

row_id! {
    /// An approval's id: assigned in creation order by the ApprovalArbiter.
    ApprovalId
}

words! {
    "snake_case" [Default]
    /// Who asked for an approval; told by the credential the request came with, never by
    /// the request itself.
    pub enum ApprovalKind {
        /// warden itself, before it starts a gated execution: only this approval releases
        /// that execution.
        Gate,
        /// An agent, with its execution's agent token (e.g. `warden hook claude`).
        Agent,
        /// The owner, with the owner token (a script, the CLI).
        #[default]
        Owner,
    }
}

words! {
    "snake_case" []
    pub enum ApprovalStatus {
        Pending,
        Approved,
        Denied,
        Expired,
        Cancelled,
    }
}

words! {
    "snake_case" []
    /// What a human (or the deadline) decided.
    pub enum Decision {
        Approve,
        Deny,
    }
}

/// An approval as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    #[schema(value_type = i64)]
    pub id: ApprovalId,
    pub status: ApprovalStatus,
    /// Who asked: `gate` (warden, before a gated execution starts), `agent` (with an
    /// execution's agent token) or `owner`.
    #[serde(default)]
    pub kind: ApprovalKind,
    pub title: String,
    /// Any JSON: what is being asked about (argv, a tool's input, …).
    pub details: serde_json::Value,
    /// Who asked: `warden` for gated executions, `claude-code` for the hook, or the
    /// caller's own word.
    pub source: String,
    #[schema(value_type = Option<i64>)]
    pub execution_id: Option<ExecutionId>,
    #[schema(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Applied at the deadline.
    pub default: Decision,
    /// Who answered: `owner` with the client it answered from (`owner via cli`), or
    /// `deadline` / `warden` for an expired or cancelled one.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

impl Approval {
    /// What is asked, field by field, for a person to read before deciding: each string
    /// in `details` whole (a command, a file path, an edit), nested objects flattened
    /// to dotted names (`tool_input.command`), anything else as compact JSON.
    pub fn detail_fields(&self) -> Vec<(String, String)> {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                        walk(&name, value, out);
                    }
                }
                serde_json::Value::String(text) => out.push((prefix.to_owned(), text.clone())),
                other => out.push((prefix.to_owned(), other.to_string())),
            }
        }
        let mut fields = Vec::new();
        walk("", &self.details, &mut fields);
        fields
    }

    /// Who asked, in words: "the agent of execution 12", "warden, before execution 12
    /// starts", "the owner".
    pub fn asker(&self) -> String {
        match (self.kind, self.execution_id) {
            (ApprovalKind::Gate, Some(id)) => format!("warden, before execution {id} starts"),
            (ApprovalKind::Agent, Some(id)) => format!("the agent of execution {id}"),
            (ApprovalKind::Owner, Some(id)) => format!("the owner, about execution {id}"),
            _ => "the owner".to_owned(),
        }
    }

    /// The decision in force: the human's, the default for an expired one, none while
    /// pending, deny for a cancelled one.
    pub fn outcome(&self) -> Option<Decision> {
        match self.status {
            ApprovalStatus::Pending => None,
            ApprovalStatus::Approved => Some(Decision::Approve),
            ApprovalStatus::Denied | ApprovalStatus::Cancelled => Some(Decision::Deny),
            ApprovalStatus::Expired => Some(self.default),
        }
    }
}

/// Body of `POST /api/v1/approvals`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApproval {
    /// What is asked, in one line (at most 500 characters, not blank).
    #[schema(max_length = 500, pattern = "\\S")]
    pub title: String,
    #[serde(default)]
    pub details: serde_json::Value,
    /// Seconds until the default applies (1 to 86400; default from the config).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_s: Option<u64>,
    /// `deny` unless said otherwise.
    #[serde(default)]
    pub default: Option<Decision>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub execution_id: Option<ExecutionId>,
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
    #[serde(default)]
    pub source: Option<String>,
}

/// Body of `POST /api/v1/approvals/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Decision,
    #[serde(default)]
    pub reason: Option<String>,
}
