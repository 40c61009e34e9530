//! What an execution changed in its git work tree: the snapshots recorded on the
//! execution (`Execution::changes`), the changed files between two snapshots, and the
//! shapes of `GET /executions/{id}/changes` and `/diff`. The ChangeTracker makes them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The snapshots of an execution's git work tree. Null on an execution whose cwd is not
/// inside a git work tree, and before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ChangesSummary {
    /// The top of the work tree; paths in changes are relative to it.
    pub repo_root: String,
    /// `HEAD` when the execution started; null in a repository with no commit yet.
    pub head: Option<String>,
    /// The git tree of the working tree (tracked and untracked files, ignores respected)
    /// when the execution started.
    pub start_tree: Option<String>,
    /// The same when it ended; null while it runs.
    pub end_tree: Option<String>,
    /// From `start_tree` to `end_tree`, once both are recorded.
    pub totals: Option<ChangeTotals>,
    /// Why a snapshot could not be taken. The execution itself is not failed by it.
    pub error: Option<String>,
}

impl ChangesSummary {
    /// A snapshot of this work tree that could not be taken.
    pub fn failed(repo_root: impl Into<String>, error: impl Into<String>) -> Self {
        ChangesSummary { repo_root: repo_root.into(), error: Some(error.into()), ..Default::default() }
    }

    /// Has a start snapshot and is waiting for its end one.
    pub fn awaits_end(&self) -> bool {
        self.start_tree.is_some() && self.end_tree.is_none() && self.error.is_none()
    }
}

/// "+120 −8 in 5 files".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct ChangeTotals {
    pub files: u64,
    pub additions: u64,
    pub deletions: u64,
}

impl ChangeTotals {
    pub fn of(files: &[ChangedFile]) -> Self {
        ChangeTotals {
            files: files.len() as u64,
            additions: files.iter().map(|f| f.additions).sum(),
            deletions: files.iter().map(|f| f.deletions).sum(),
        }
    }
}

/// How a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
}

/// One changed file. Binary files count no lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangedFile {
    pub path: String,
    pub status: ChangeStatus,
    /// The path before a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub additions: u64,
    pub deletions: u64,
    pub binary: bool,
}

/// `GET /api/v1/executions/{id}/changes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangesReport {
    pub execution_id: i64,
    /// Null when there is nothing to compare; `reason` says why.
    pub changes: Option<ChangeSet>,
    pub reason: Option<String>,
}

/// The files changed between two snapshots.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChangeSet {
    pub repo_root: String,
    pub head: Option<String>,
    pub from_tree: String,
    pub to_tree: String,
    /// True while the execution runs: `to_tree` is the working tree as it is now (taken
    /// on request, at most once per `changes.live_interval_ms`).
    pub live: bool,
    pub files: Vec<ChangedFile>,
    pub totals: ChangeTotals,
}

/// How `/diff` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiffFormat {
    /// `text/x-diff`: git's unified diff.
    #[default]
    Unified,
    /// Each changed file with its own diff text.
    Json,
}

/// `GET /api/v1/executions/{id}/diff` query.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// One file (its new or old path); default: every changed file.
    pub path: Option<String>,
    /// Lines of context around each change, 0 to 1000 (default 3).
    #[param(maximum = 1000)]
    pub context: Option<u32>,
    /// `unified` (default) or `json`.
    pub format: Option<DiffFormat>,
}

/// `GET /api/v1/executions/{id}/diff?format=json`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiffReport {
    pub execution_id: i64,
    pub from_tree: String,
    pub to_tree: String,
    pub live: bool,
    pub files: Vec<FileDiff>,
    /// The diff was longer than the limit; files past it have `diff: null`. Fetch those
    /// one at a time with `?path=`.
    pub truncated: bool,
}

/// One file's diff, as in `DiffReport`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileDiff {
    #[serde(flatten)]
    pub file: ChangedFile,
    /// The file's unified diff (a one-line note for a binary file); null past the limit.
    pub diff: Option<String>,
    /// This file's diff is cut short or missing because of the limit.
    pub truncated: bool,
}

/// What `POST /api/v1/executions/{id}/apply` did: the files of the user's work tree it
/// changed (left uncommitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AppliedWork {
    #[schema(value_type = i64)]
    pub execution_id: super::ExecutionId,
    pub files: Vec<String>,
}

/// `POST /api/v1/executions/{id}/merge`: how to merge an isolated execution's work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The branch to merge into (default: the execution's `base_branch`).
    pub into: Option<String>,
    /// One commit with the execution's work on top of `into` (true), or a merge commit
    /// of both branches (false). Default: a merge commit when the execution's base is in
    /// `into`'s history, else one commit (a base that records your uncommitted work is
    /// never made part of the branch's history).
    pub squash: Option<bool>,
    /// The commit message (default: the prompt's first line and the execution's id).
    pub message: Option<String>,
}

/// What `POST /api/v1/executions/{id}/merge` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MergedWork {
    #[schema(value_type = i64)]
    pub execution_id: super::ExecutionId,
    /// The branch that moved.
    pub into: String,
    /// The commit it points at now.
    pub commit: String,
    pub squash: bool,
    /// The files that commit changed on `into`.
    pub files: Vec<String>,
}
