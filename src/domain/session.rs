//! Sessions: a conversation with one agent profile in one place. Each user message
//! becomes an execution (a turn); the agent's stdout becomes its reply.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ExecutionId;

row_id! {
    /// A session's id: assigned in creation order by the SessionKeeper.
    SessionId
}

words! {
    "snake_case" []
    pub enum SessionStatus {
        Idle,
        Running,
        Closed,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    #[schema(value_type = i64)]
    pub id: SessionId,
    pub title: String,
    pub workspace: Option<String>,
    pub cwd: String,
    pub profile: String,
    pub status: SessionStatus,
    /// Handed to the agent (`{session_uuid}`), e.g. Claude Code's `--session-id`/`--resume`.
    pub session_uuid: String,
    /// Turns started so far.
    pub turns: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[schema(value_type = Option<i64>)]
    pub last_execution_id: Option<ExecutionId>,
    /// The agent's own conversation id, from the last turn whose agent told one: the
    /// next turn's `{agent_session_id}`.
    #[serde(default)]
    pub agent_session_id: Option<String>,
    /// What the agent's conversation had used so far, where the agent reports totals
    /// over a resumed conversation (Codex); not shown.
    #[serde(skip)]
    pub conversation_tokens: Option<super::Tokens>,
}

words! {
    "snake_case" []
    pub enum Role {
        User,
        Agent,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionMessage {
    pub id: i64,
    #[schema(value_type = i64)]
    pub session_id: SessionId,
    pub role: Role,
    pub content: String,
    /// The turn's execution (null for a user message still waiting for its turn).
    #[schema(value_type = Option<i64>)]
    pub execution_id: Option<ExecutionId>,
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/sessions`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// Default `shell`.
    #[serde(default)]
    pub profile: Option<String>,
    /// At most 200 characters; blank or missing means `Session <id>`.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub title: Option<String>,
}

/// Body of `POST /api/v1/sessions/{id}/messages`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The message, not blank: it becomes the turn's `{prompt}`.
    #[schema(pattern = "\\S")]
    pub content: String,
}

/// Body of `PATCH /api/v1/sessions/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionPatch {
    /// 1 to 200 characters, not blank.
    #[schema(max_length = 200, pattern = "\\S")]
    pub title: String,
}
