//! Retention's nouns: a pruned range (what a replay or a history page says in place of
//! events that are gone) and what a prune pass freed or would free.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ExecutionId;

words! {
    "snake_case" []
    /// Why events are gone: a retention pass, or the owner deleted the execution.
    pub enum PruneReason {
        Retention,
        Deleted,
    }
}

/// Events between `from_seq` and `to_seq` (both included) that were removed: those of
/// one execution (`execution_id`) or of every execution one pass pruned (`executions`).
/// Events of kept executions inside the range are still there and still replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrunedRange {
    pub from_seq: u64,
    pub to_seq: u64,
    /// How many executions lost events in the range.
    pub executions: u64,
    /// The one execution, when the range is one execution's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub execution_id: Option<ExecutionId>,
    pub reason: PruneReason,
    pub at: DateTime<Utc>,
}

impl PrunedRange {
    /// The notice live clients get: `{"type":"pruned",…}` (SSE: `event: pruned`).
    pub fn notice_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("type".into(), "pruned".into());
        }
        value.to_string()
    }
}

/// What a prune pass freed (or, for a dry run, would free).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Final executions whose output and events were (would be) removed; their rows stay.
    pub executions: u64,
    pub output_lines: u64,
    pub events: u64,
    /// The bytes of text those rows held.
    pub bytes: u64,
    /// Snapshot objects no kept execution needs, and their bytes on disk.
    pub snapshot_objects: u64,
    pub snapshot_bytes: u64,
    /// Worktrees whose executions were all pruned, removed (their work kept on the branch).
    pub worktrees: u64,
    /// The database's size before and after (pages in use, and the file).
    pub database_bytes_before: u64,
    pub database_bytes_after: u64,
    pub took_ms: u64,
}

/// What deleting one execution removed (`DELETE /api/v1/executions/{id}`, `warden rm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    #[schema(value_type = i64)]
    pub execution_id: ExecutionId,
    pub output_lines: u64,
    pub events: u64,
    pub bytes: u64,
}
