//! `ChangeTracker` answers "what did this execution change?". The ExecutionMonitor asks
//! it for a snapshot of the work tree when an execution starts (waiting a bounded time)
//! and when it ends; HTTP handlers ask it for the changed files and the diff. Git runs
//! in child processes (`git.rs`), never on the actor's thread.
//!
//! Snapshots of one work tree run one at a time, in the order asked, so an execution's
//! end snapshot is taken before the next execution's start snapshot there. Executions
//! that overlap in one work tree each compare their own start with their own end, so
//! each also sees what the others changed meanwhile.

pub mod branch;
mod cleanup;
pub mod git;
mod isolation;
pub mod sweep;
#[cfg(test)]
mod testing;
pub mod worktree;

pub use cleanup::CleanWorktrees;
pub use isolation::{Apply, Discard, Isolated, Merge, PrepareWorktree, RemoveWorktree};
pub use sweep::{RetireWorktree, SweepSnapshots, Swept};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};
use tokio::sync::oneshot;

use crate::domain::{
    ChangeSet, ChangeTotals, ChangedFile, ChangesReport, ChangesSummary, DiffFormat, DiffQuery, DiffReport, Execution,
    ExecutionId, FileDiff, NewEvent,
};
use crate::store::{executions as rows, Store, StoreError};
use git::{Git, GitError, Objects, Repo};

pub use crate::config::ChangeSettings;

/// What a `changes` or `diff` request can run into.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    /// There are no two snapshots to compare; says why.
    #[error("{0}")]
    NotRecorded(String),
    #[error("execution {id} changed no file at {path:?}")]
    UnknownPath { id: ExecutionId, path: String },
    #[error("{0}")]
    Invalid(String),
    /// The execution has no worktree (not isolated, not final yet, or discarded).
    #[error("{0}")]
    NoWorktree(String),
    #[error("{0}")]
    Worktree(String),
    /// The user's files changed while the work was being applied; nothing was changed.
    #[error(
        "the work tree changed while the work of execution {0} was being applied (nothing was changed): try again"
    )]
    WorkTreeChanged(ExecutionId),
    /// A merge found nothing to do, or could not be made as asked: says why (nothing
    /// was changed).
    #[error("{why}")]
    NotMerged { code: &'static str, why: String, files: Vec<String> },
    /// Applying the work would not merge cleanly in these files; nothing was changed.
    #[error("the work of execution {id} does not apply cleanly: {} conflict (nothing was changed)", .files.join(", "))]
    Conflict { id: ExecutionId, files: Vec<String> },
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Take the start snapshot of an execution about to start. Replies within the start
/// timeout: `None` outside a git work tree, a summary with `error` if it failed or
/// took too long.
#[derive(Message, Debug)]
#[rtype(result = "Option<ChangesSummary>")]
pub struct SnapshotStart {
    pub id: ExecutionId,
    pub cwd: PathBuf,
}

/// Take the end snapshot of an execution that ended (its `changes` has a start tree),
/// store it with its totals and publish `execution.changes`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SnapshotEnd {
    pub execution: Execution,
}

/// Shutdown: end snapshots still being taken are not stored (the next start takes them
/// again), so nothing is written after the store's last flush.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopRecording;

/// Told to the ExecutionMonitor when an end snapshot is stored, so its read model shows it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ChangesRecorded {
    pub id: ExecutionId,
    pub changes: ChangesSummary,
}

/// The changed files of an execution (live while it runs).
#[derive(Message, Debug)]
#[rtype(result = "Result<ChangesReport, ChangesError>")]
pub struct GetChanges {
    pub execution: Execution,
}

/// The diff of an execution (live while it runs).
#[derive(Message, Debug)]
#[rtype(result = "Result<Diff, ChangesError>")]
pub struct GetDiff {
    pub execution: Execution,
    pub query: DiffQuery,
}

/// What `GetDiff` answers, in the format asked for.
#[derive(Debug)]
pub enum Diff {
    Unified { text: String, truncated: bool },
    Json(DiffReport),
}

type Tree = Shared<LocalBoxFuture<'static, Result<String, String>>>;

/// The actor.
pub struct ChangeTracker {
    git: Git,
    store: Store,
    settings: ChangeSettings,
    /// Told when an end snapshot is stored (the ExecutionMonitor).
    recorded: Recipient<ChangesRecorded>,
    /// The last snapshot asked for in each work tree: the next one waits for it.
    tails: HashMap<PathBuf, Shared<LocalBoxFuture<'static, ()>>>,
    /// End snapshots being taken, for requests that arrive meanwhile.
    ending: HashMap<ExecutionId, Shared<LocalBoxFuture<'static, ChangesSummary>>>,
    /// The latest live snapshot of each running execution and when it was asked for.
    live: HashMap<ExecutionId, (Instant, Tree)>,
    /// Set at shutdown: finished snapshots are no longer stored.
    stopping: Arc<AtomicBool>,
    /// A clean-up pass of old worktrees is running.
    cleaning: bool,
}

impl ChangeTracker {
    pub fn new(git: Git, store: Store, settings: ChangeSettings, recorded: Recipient<ChangesRecorded>) -> Self {
        ChangeTracker {
            git,
            store,
            settings,
            recorded,
            tails: HashMap::new(),
            ending: HashMap::new(),
            live: HashMap::new(),
            stopping: Arc::new(AtomicBool::new(false)),
            cleaning: false,
        }
    }

    /// Snapshots the work tree at `root` after the snapshots already asked for there,
    /// within `timeout` (the wait included). It runs whether or not anyone awaits it.
    fn queue_snapshot(
        &mut self,
        root: PathBuf,
        label: String,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<String, String>> + 'static {
        self.queue_snapshot_to(root, label, timeout, Objects::Warden)
    }

    /// `queue_snapshot`, its objects written where `objects` says.
    fn queue_snapshot_to(
        &mut self,
        root: PathBuf,
        label: String,
        timeout: Duration,
        objects: Objects,
    ) -> impl std::future::Future<Output = Result<String, String>> + 'static {
        let before = self.tails.get(&root).cloned();
        let git = self.git.clone();
        let (sent, received) = oneshot::channel();
        let at = root.clone();
        let job = async move {
            let snapshot = async {
                if let Some(before) = before {
                    before.await;
                }
                let repo = locate(&git, &at).await.map_err(|e| e.to_string())?;
                match objects {
                    Objects::Warden => git.snapshot(&repo, &label).await,
                    Objects::Repository => git.snapshot_into_repository(&repo, &label).await,
                }
                .map_err(|e| e.to_string())
            };
            let result = tokio::time::timeout(timeout, snapshot).await.unwrap_or_else(|_| Err(too_slow(timeout)));
            let _ = sent.send(result);
        };
        let handle = actix::spawn(job);
        self.tails.insert(root, async move { drop(handle.await) }.boxed_local().shared());
        async move { received.await.unwrap_or_else(|_| Err("the snapshot was abandoned".to_owned())) }
    }

    /// The execution's start compared with its end snapshot once recorded (waiting for
    /// one being taken); while it runs, with the working tree now (a live snapshot,
    /// reused within the live interval).
    fn compare(&mut self, execution: &Execution) -> LocalBoxFuture<'static, Result<Comparison, ChangesError>> {
        let not_recorded = |reason: String| async move { Err(ChangesError::NotRecorded(reason)) }.boxed_local();
        let id = execution.id;
        if let Some(at) = execution.pruned_at {
            let at = crate::domain::format_ts(&at);
            return not_recorded(format!(
                "its snapshots were pruned at {at} (retention); the totals stay in `changes`"
            ));
        }
        let Some(summary) = execution.changes.clone() else { return not_recorded(no_changes_reason(execution)) };
        let Some(from) = summary.start_tree.clone().filter(|_| summary.error.is_none()) else {
            return not_recorded(ended_without_end(&summary));
        };
        let to: LocalBoxFuture<'static, Result<(String, bool), String>> = if let Some(end) = summary.end_tree.clone() {
            async move { Ok((end, false)) }.boxed_local()
        } else if let Some(ending) = self.ending.get(&id).cloned() {
            async move {
                let ended = ending.await;
                ended.end_tree.clone().map(|end| (end, false)).ok_or_else(|| ended_without_end(&ended))
            }
            .boxed_local()
        } else if execution.status.is_final() {
            return not_recorded("the end snapshot was not recorded (it is taken when the daemon starts again)".into());
        } else {
            let fresh = self.live.get(&id).filter(|(asked, _)| asked.elapsed() < self.settings.live_interval);
            let tree = match fresh {
                Some((_, tree)) => tree.clone(),
                None => {
                    let root = PathBuf::from(&summary.repo_root);
                    let timeout = self.settings.snapshot_timeout;
                    let tree: Tree = self.queue_snapshot(root, format!("{id}-live"), timeout).boxed_local().shared();
                    self.live.insert(id, (Instant::now(), tree.clone()));
                    tree
                }
            };
            async move { tree.await.map(|tree| (tree, true)).map_err(|e| format!("the live snapshot failed: {e}")) }
                .boxed_local()
        };
        let git = self.git.clone();
        async move {
            let (to, live) = to.await.map_err(ChangesError::NotRecorded)?;
            let repo = locate(&git, Path::new(&summary.repo_root)).await?;
            let files = git.changed_files(&repo, &from, &to).await?;
            Ok(Comparison { repo, summary, from, to, live, files })
        }
        .boxed_local()
    }
}

/// Two snapshots of an execution's work tree and the files that differ.
struct Comparison {
    repo: Repo,
    summary: ChangesSummary,
    from: String,
    to: String,
    live: bool,
    files: Vec<ChangedFile>,
}

impl Actor for ChangeTracker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.notify(CleanWorktrees);
        ctx.run_interval(cleanup::period(self.settings.keep_worktrees), |_, ctx| ctx.notify(CleanWorktrees));
    }
}

impl Handler<SnapshotStart> for ChangeTracker {
    type Result = ResponseActFuture<Self, Option<ChangesSummary>>;

    fn handle(&mut self, msg: SnapshotStart, _: &mut Self::Context) -> Self::Result {
        if !self.settings.enabled || !git::may_be_in_work_tree(&msg.cwd) {
            return Box::pin(fut::ready(None));
        }
        let (git, timeout) = (self.git.clone(), self.settings.start_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let cwd = msg.cwd.clone();
        let located = async move {
            let located = tokio::time::timeout_at(deadline, git.locate(&cwd)).await;
            match located {
                Ok(Ok(Some(repo))) => match tokio::time::timeout_at(deadline, git.head(&repo)).await {
                    Ok(Ok(head)) => Ok(Some((repo, head))),
                    Ok(Err(e)) => Err((cwd.display().to_string(), e.to_string())),
                    Err(_) => Err((cwd.display().to_string(), too_slow(timeout))),
                },
                Ok(Ok(None)) => Ok(None),
                Ok(Err(e)) => Err((cwd.display().to_string(), e.to_string())),
                Err(_) => Err((cwd.display().to_string(), too_slow(timeout))),
            }
        };
        let id = msg.id;
        Box::pin(located.into_actor(self).then(move |located, act, _| {
            // Queued in the actor (it keeps each work tree's order), awaited outside it.
            let queued = match located {
                Ok(Some((repo, head))) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let root = repo.root.display().to_string();
                    Ok((act.queue_snapshot(repo.root, format!("{id}-start"), left), root, head))
                }
                Ok(None) => Err(None),
                Err((place, error)) => Err(Some(ChangesSummary::failed(place, error))),
            };
            async move {
                let (tree, root, head) = match queued {
                    Ok(queued) => queued,
                    Err(outcome) => return outcome,
                };
                Some(match tree.await {
                    Ok(tree) => ChangesSummary { repo_root: root, head, start_tree: Some(tree), ..Default::default() },
                    Err(error) => ChangesSummary { head, ..ChangesSummary::failed(root, error) },
                })
            }
            .into_actor(act)
            .map(move |summary, _, _| {
                if let Some(error) = summary.as_ref().and_then(|s| s.error.as_ref()) {
                    tracing::warn!(execution = %id, ?error, "start snapshot failed");
                }
                summary
            })
        }))
    }
}

impl Handler<SnapshotEnd> for ChangeTracker {
    type Result = ();

    fn handle(&mut self, msg: SnapshotEnd, ctx: &mut Self::Context) {
        let execution = msg.execution;
        let id = execution.id;
        self.live.remove(&id);
        let Some(summary) = execution.changes.clone().filter(ChangesSummary::awaits_end) else { return };
        let (git, root) = (self.git.clone(), PathBuf::from(&summary.repo_root));
        // An isolated execution's end is recorded on its branch, in the repository.
        let seal = execution.branch.clone().filter(|_| execution.worktree.is_some());
        let objects = if seal.is_some() { Objects::Repository } else { Objects::Warden };
        // Chained now, synchronously, so that it runs before any snapshot asked for later.
        let tree = self.queue_snapshot_to(root.clone(), format!("{id}-end"), self.settings.snapshot_timeout, objects);
        let message = seal_message(&execution);
        let (store, recorded, stopping) = (self.store.clone(), self.recorded.clone(), self.stopping.clone());
        let start = summary.start_tree.clone().unwrap_or_default();
        let ended = async move {
            let mut summary = summary;
            match tree.await {
                Ok(end) => match totals(&git, &root, &start, &end).await {
                    Ok(totals) => {
                        if let Some(branch) = &seal {
                            let sealed = async {
                                let repo = locate(&git, &root).await?;
                                Ok::<_, ChangesError>(git.seal(&repo, branch, &end, Some(&root), &message).await?)
                            };
                            if let Err(e) = sealed.await {
                                tracing::warn!(execution = %id, error = %e, "its work was not committed on its branch");
                            }
                        }
                        summary.end_tree = Some(end);
                        summary.totals = Some(totals);
                    }
                    Err(e) => summary.error = Some(format!("comparing the snapshots failed: {e}")),
                },
                Err(error) => summary.error = Some(format!("the end snapshot failed: {error}")),
            }
            if stopping.load(Ordering::SeqCst) {
                // Checked and queued in one step, so it cannot land after the last flush.
                return summary;
            }
            let stored = summary.clone();
            let event = NewEvent {
                kind: "execution.changes",
                execution_id: Some(id),
                approval_id: None,
                session_id: execution.session_id,
                workspace: execution.workspace.clone(),
                data: serde_json::json!({ "execution_id": id, "changes": &summary }),
            };
            let written = store
                .record("record execution changes", move |c, log| {
                    rows::set_changes(c, id, &Some(stored))?;
                    log.record(c, event).map(|_| ())
                })
                .await;
            match written {
                Ok(()) => recorded.do_send(ChangesRecorded { id, changes: summary.clone() }),
                Err(e) => tracing::error!(execution = %id, error = %e, "storing the end snapshot failed"),
            }
            summary
        };
        let shared = ended.boxed_local().shared();
        self.ending.insert(id, shared.clone());
        ctx.spawn(shared.into_actor(self).map(move |_, act, _| {
            act.ending.remove(&id);
        }));
    }
}

impl Handler<StopRecording> for ChangeTracker {
    type Result = ();

    fn handle(&mut self, _: StopRecording, _: &mut Self::Context) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

impl Handler<GetChanges> for ChangeTracker {
    type Result = ResponseFuture<Result<ChangesReport, ChangesError>>;

    fn handle(&mut self, msg: GetChanges, _: &mut Self::Context) -> Self::Result {
        let execution_id = msg.execution.id.0;
        let comparison = self.compare(&msg.execution);
        Box::pin(async move {
            let compared = match comparison.await {
                Ok(compared) => compared,
                Err(ChangesError::NotRecorded(reason)) => {
                    return Ok(ChangesReport { execution_id, changes: None, reason: Some(reason) })
                }
                Err(e) => return Err(e),
            };
            let totals = ChangeTotals::of(&compared.files);
            let set = ChangeSet {
                repo_root: compared.summary.repo_root,
                head: compared.summary.head,
                from_tree: compared.from,
                to_tree: compared.to,
                live: compared.live,
                files: compared.files,
                totals,
            };
            Ok(ChangesReport { execution_id, changes: Some(set), reason: None })
        })
    }
}

impl Handler<GetDiff> for ChangeTracker {
    type Result = ResponseFuture<Result<Diff, ChangesError>>;

    fn handle(&mut self, msg: GetDiff, _: &mut Self::Context) -> Self::Result {
        let GetDiff { execution, query } = msg;
        let context = query.context.unwrap_or(3);
        if context > 1000 {
            return Box::pin(async { Err(ChangesError::Invalid("context must be between 0 and 1000".into())) });
        }
        let comparison = self.compare(&execution);
        let (git, max_bytes, id) = (self.git.clone(), self.settings.max_diff_bytes, execution.id);
        Box::pin(async move {
            let Comparison { repo, from, to, live, mut files, .. } = comparison.await?;
            if let Some(path) = &query.path {
                files.retain(|f| &f.path == path || f.old_path.as_ref() == Some(path));
                if files.is_empty() {
                    return Err(ChangesError::UnknownPath { id, path: path.clone() });
                }
            }
            // A rename needs both of its paths, or git shows an add and a delete.
            let paths: Vec<String> = match &query.path {
                Some(_) => {
                    files.iter().flat_map(|f| std::iter::once(f.path.clone()).chain(f.old_path.clone())).collect()
                }
                None => Vec::new(),
            };
            let (text, truncated) = git.unified_diff(&repo, &from, &to, &paths, context, max_bytes).await?;
            Ok(match query.format.unwrap_or_default() {
                DiffFormat::Unified => Diff::Unified { text: mark_truncated(text, truncated, max_bytes), truncated },
                DiffFormat::Json => Diff::Json(per_file(id, from, to, live, files, &text, truncated)),
            })
        })
    }
}

/// Why an execution has no snapshots.
fn no_changes_reason(execution: &Execution) -> String {
    match (execution.started_at, execution.status) {
        (None, status) if status.is_final() => format!("the execution never ran (it ended {status})"),
        (None, _) => "the execution has not started yet".into(),
        (Some(_), _) => format!("{} is not inside a git work tree", execution.cwd),
    }
}

fn ended_without_end(summary: &ChangesSummary) -> String {
    match &summary.error {
        Some(error) => format!("no changes were recorded: {error}"),
        None => "the end snapshot was not recorded".into(),
    }
}

/// The message of the commit that records an isolated execution's work on its branch.
fn seal_message(execution: &Execution) -> String {
    let line: String = execution.prompt.lines().next().unwrap_or_default().chars().take(60).collect();
    format!("warden: the work of execution {}: {line}", execution.id)
}

/// The message of the commit that records what was left in a worktree before it is
/// removed.
fn seal_message_for(branch: &str) -> String {
    format!("warden: what was left in the worktree of {branch}")
}

fn too_slow(timeout: Duration) -> String {
    format!("the snapshot took longer than {}s and was stopped", timeout.as_secs_f64())
}

async fn locate(git: &Git, root: &Path) -> Result<Repo, ChangesError> {
    git.locate(root).await?.ok_or_else(|| {
        ChangesError::NotRecorded(format!(
            "{} is no longer a git work tree, so its changes cannot be read",
            root.display()
        ))
    })
}

async fn totals(git: &Git, root: &Path, from: &str, to: &str) -> Result<ChangeTotals, ChangesError> {
    let repo = locate(git, root).await?;
    Ok(ChangeTotals::of(&git.changed_files(&repo, from, to).await?))
}

fn mark_truncated(mut text: String, truncated: bool, max_bytes: usize) -> String {
    if truncated {
        text.push_str(&format!(
            "\n[warden: the diff is longer than {max_bytes} bytes and was cut here; ask for one file with ?path=]\n"
        ));
    }
    text
}

/// The diff text cut into files, in the listing's order; files past a cut have none.
fn per_file(
    id: ExecutionId,
    from_tree: String,
    to_tree: String,
    live: bool,
    files: Vec<ChangedFile>,
    text: &str,
    truncated: bool,
) -> DiffReport {
    let parts = git::split_by_file(text);
    let complete = if truncated { parts.len().saturating_sub(1) } else { parts.len() };
    let files = files
        .into_iter()
        .enumerate()
        .map(|(n, file)| FileDiff { file, diff: parts.get(n).map(|p| p.to_string()), truncated: n >= complete })
        .collect();
    DiffReport { execution_id: id.0, from_tree, to_tree, live, files, truncated }
}
