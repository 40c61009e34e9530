//! `Retention`: keeps a daemon that runs for months from growing without end. A pass
//! (an hour after another, the first a minute after the start, or when `warden prune`
//! asks) removes the output and events of final executions older than `output_days`
//! (the newest `keep_last` are kept whatever their age), then of the oldest ones while
//! the database is over `max_db_mb`, gives the freed pages back to the file system
//! (incremental vacuum), and asks the ChangeTracker to drop the snapshot objects and
//! worktrees that only pruned executions needed. Each pruned execution keeps its row (its
//! summary, `pruned_at` set) and leaves a pruned range, which replays and history pages
//! report. `DELETE /executions/{id}` removes one final execution whole.
//!
//! A pass never runs on an actor's thread and never holds the store's writer long:
//! reads go to the pool, and every write is a job of about a quarter of a millisecond
//! ([`STEP`]), awaited, then a pause ([`PAUSE`]) before the next, so other writers' jobs
//! interleave and the daemon keeps most of the CPU. One pass runs
//! at a time; asking while one runs joins it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::{FutureExt, LocalBoxFuture, Shared};

use super::change_tracker::{ChangeTracker, RetireWorktree, SweepSnapshots};
use crate::config::RetentionSettings;
use crate::domain::{now, ExecutionId, ExecutionStatus, NewEvent, PruneReason, PruneReport, Removed};
use crate::store::retention::{self as rows, Candidate, Footprint, NotDeleted, Pruning};
use crate::store::{executions, Store, StoreError};

/// The longest one removal job holds the store's writer (at least one small batch runs).
const STEP: Duration = Duration::from_micros(250);
/// Free pages given back per vacuum job.
const VACUUM_PAGES: u32 = 32;
/// The pause after each job: the writer and the two cores are mostly left to the
/// daemon's own work while a pass runs.
const PAUSE: Duration = Duration::from_millis(1);
/// Candidates read per query.
const BATCH: usize = 200;
/// Executions measured, marked and removed together.
const GROUP: usize = 16;

/// Run a pass now (or join the one running); a dry run only says what one would free.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<PruneReport, RetentionError>")]
pub struct Prune {
    pub dry_run: bool,
}

/// Delete one final execution: its row, output, events and worktree (its branch stays).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Removed, RetentionError>")]
pub struct DeleteExecution {
    pub id: ExecutionId,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RetentionError {
    #[error("no execution {0}")]
    NotFound(ExecutionId),
    #[error("execution {id} is {status}: only a final execution can be deleted (cancel it first)")]
    NotFinal { id: ExecutionId, status: ExecutionStatus },
    #[error("pruning failed: {0}")]
    Failed(String),
}

impl From<StoreError> for RetentionError {
    fn from(e: StoreError) -> Self {
        RetentionError::Failed(e.to_string())
    }
}

type Pass = Shared<LocalBoxFuture<'static, Result<PruneReport, RetentionError>>>;

/// The actor.
pub struct Retention {
    store: Store,
    settings: RetentionSettings,
    changes: Addr<ChangeTracker>,
    /// The number the next pass (or deletion) records its ranges under.
    next_pass: i64,
    running: Option<Pass>,
}

impl Retention {
    /// `last_pass`: the highest pass number stored.
    pub fn new(store: Store, settings: RetentionSettings, changes: Addr<ChangeTracker>, last_pass: i64) -> Self {
        Retention { store, settings, changes, next_pass: last_pass + 1, running: None }
    }

    fn take_pass_number(&mut self) -> i64 {
        let pass = self.next_pass;
        self.next_pass += 1;
        pass
    }

    fn worker(&self) -> Worker {
        Worker { store: self.store.clone(), settings: self.settings.clone(), changes: self.changes.clone() }
    }
}

impl Actor for Retention {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.settings.enabled {
            return;
        }
        let (first, period) = (self.settings.first_pass_after, self.settings.period);
        ctx.run_later(first, move |_, ctx| {
            ctx.notify(Prune { dry_run: false });
            ctx.run_interval(period, |_, ctx| ctx.notify(Prune { dry_run: false }));
        });
    }
}

impl Handler<Prune> for Retention {
    type Result = ResponseFuture<Result<PruneReport, RetentionError>>;

    fn handle(&mut self, msg: Prune, ctx: &mut Self::Context) -> Self::Result {
        if msg.dry_run {
            return Box::pin(self.worker().pass(0, true));
        }
        if let Some(running) = &self.running {
            return Box::pin(running.clone());
        }
        let pass: Pass = self.worker().pass(self.take_pass_number(), false).boxed_local().shared();
        self.running = Some(pass.clone());
        ctx.spawn(pass.clone().into_actor(self).map(|outcome, act, _| {
            act.running = None;
            match outcome {
                Ok(report) if report.executions > 0 => tracing::info!(
                    executions = report.executions,
                    output_lines = report.output_lines,
                    freed_bytes = report.database_bytes_before.saturating_sub(report.database_bytes_after),
                    took_ms = report.took_ms,
                    "retention pruned old output"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "a retention pass failed"),
            }
        }));
        Box::pin(pass)
    }
}

impl Handler<DeleteExecution> for Retention {
    type Result = ResponseFuture<Result<Removed, RetentionError>>;

    fn handle(&mut self, msg: DeleteExecution, _: &mut Self::Context) -> Self::Result {
        let pass = self.take_pass_number();
        let worker = self.worker();
        Box::pin(async move { worker.delete(msg.id, pass).await })
    }
}

/// What a pass or a deletion works with, off the actor.
struct Worker {
    store: Store,
    settings: RetentionSettings,
    changes: Addr<ChangeTracker>,
}

impl Worker {
    async fn pass(self, pass: i64, dry_run: bool) -> Result<PruneReport, RetentionError> {
        let started = Instant::now();
        let (_, file_before) = self.store.read("measure the database", rows::size).await?;
        let mut report = PruneReport { dry_run, database_bytes_before: file_before, ..Default::default() };
        if !dry_run {
            // Executions an earlier pass (or deletion) left half removed.
            self.remove_rows(self.store.read("find unfinished prunes", rows::unfinished).await?).await?;
        }
        let mut chosen: HashSet<ExecutionId> = HashSet::new();
        let cutoff = now() - chrono::Duration::from_std(self.settings.output_age).unwrap_or(chrono::Duration::MAX);
        self.prune_while(Some(cutoff), pass, dry_run, &mut chosen, &mut report, |_| true).await?;
        if let Some(cap) = self.settings.max_db_bytes {
            // Past the size cap the oldest go too, whatever their age: a dry run counts
            // down its estimate; a pass prunes twenty at a time and measures again.
            let (used, _) = self.store.read("measure the database", rows::size).await?;
            if dry_run {
                let estimate = used.saturating_sub(report.bytes);
                let over = |freed: u64| estimate.saturating_sub(freed) > cap;
                self.prune_while(None, pass, true, &mut chosen, &mut report, over).await?;
            } else {
                let mut used = used;
                while used > cap {
                    let before = report.executions;
                    let mut left = 20;
                    let some = |_| {
                        left -= 1;
                        left >= 0
                    };
                    self.prune_while(None, pass, false, &mut chosen, &mut report, some).await?;
                    if report.executions == before {
                        break;
                    }
                    used = self.store.read("measure the database", rows::size).await?.0;
                }
            }
        }
        if !dry_run {
            loop {
                let left = self.store.write("give free pages back", |c| rows::vacuum_some(c, VACUUM_PAGES)).await?;
                if left == 0 {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
            // The file itself shrinks once the WAL is copied back.
            self.store.checkpoint_passive().await?;
        }
        let sweep = SweepSnapshots { also_pruned: if dry_run { chosen } else { HashSet::new() }, dry_run };
        match self.changes.send(sweep).await {
            Ok(Ok(swept)) => {
                report.snapshot_objects = swept.objects;
                report.snapshot_bytes = swept.bytes;
                report.worktrees = swept.worktrees;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "snapshot objects were not swept"),
            Err(e) => tracing::warn!(error = %e, "the change tracker did not answer the sweep"),
        }
        report.database_bytes_after = if dry_run {
            file_before.saturating_sub(report.bytes)
        } else {
            self.store.read("measure the database", rows::size).await?.1
        };
        report.took_ms = started.elapsed().as_millis() as u64;
        if !dry_run && report.executions > 0 {
            let data = serde_json::json!({ "pass": pass, "report": &report });
            self.store
                .record("record the prune", move |c, log| {
                    log.record(c, NewEvent::new("retention.pruned", data)).map(|_| ())
                })
                .await?;
        }
        Ok(report)
    }

    /// Prunes candidates (those that ended before `finished_before`, when given) oldest
    /// first for as long as `go_on` says, asked before each with the bytes freed so far.
    async fn prune_while(
        &self,
        finished_before: Option<chrono::DateTime<chrono::Utc>>,
        pass: i64,
        dry_run: bool,
        chosen: &mut HashSet<ExecutionId>,
        report: &mut PruneReport,
        mut go_on: impl FnMut(u64) -> bool,
    ) -> Result<(), RetentionError> {
        let keep_last = self.settings.keep_last;
        let (mut after, mut freed) = (ExecutionId(0), 0);
        loop {
            let batch = self
                .store
                .read("choose what to prune", move |c| rows::candidates(c, finished_before, keep_last, after, BATCH))
                .await?;
            let Some(last) = batch.last() else { return Ok(()) };
            after = last.id;
            let fresh: Vec<Candidate> = batch.into_iter().filter(|c| !chosen.contains(&c.id)).collect();
            for group in fresh.chunks(GROUP) {
                let ids: Vec<ExecutionId> = group.iter().map(|c| c.id).collect();
                let footprints: Vec<Footprint> = self
                    .store
                    .read("measure executions", move |c| ids.iter().map(|id| rows::footprint(c, *id)).collect())
                    .await?;
                // As many as the caller wants, asked before each.
                let mut taken: Vec<(Candidate, Footprint)> = Vec::new();
                for (candidate, footprint) in group.iter().zip(footprints) {
                    if !go_on(freed) {
                        break;
                    }
                    freed += footprint.bytes;
                    taken.push((*candidate, footprint));
                }
                let stop = taken.len() < group.len();
                let pruned = if dry_run { taken } else { self.prune(taken, pass).await? };
                for (candidate, footprint) in pruned {
                    chosen.insert(candidate.id);
                    report.executions += 1;
                    report.output_lines += footprint.output_lines;
                    report.events += footprint.events;
                    report.bytes += footprint.bytes;
                }
                if stop {
                    return Ok(());
                }
            }
        }
    }

    /// Prunes a few executions: records them pruned in one job, then removes their rows;
    /// returns those that were (an execution deleted meanwhile is not).
    async fn prune(
        &self,
        taken: Vec<(Candidate, Footprint)>,
        pass: i64,
    ) -> Result<Vec<(Candidate, Footprint)>, RetentionError> {
        let at = now();
        let prunings: Vec<Pruning> = taken
            .iter()
            .map(|(candidate, footprint)| Pruning {
                candidate: *candidate,
                pass,
                reason: PruneReason::Retention,
                at,
                footprint: *footprint,
            })
            .collect();
        let marked: Vec<bool> = self
            .store
            .write("mark executions pruned", move |c| prunings.iter().map(|p| rows::mark_pruned(c, p)).collect())
            .await?;
        let pruned: Vec<(Candidate, Footprint)> =
            taken.into_iter().zip(marked).filter(|(_, marked)| *marked).map(|(taken, _)| taken).collect();
        self.remove_rows(pruned.iter().map(|(c, _)| c.id).collect()).await?;
        Ok(pruned)
    }

    /// Removes executions' output and events, one short writer job at a time.
    async fn remove_rows(&self, ids: Vec<ExecutionId>) -> Result<(), RetentionError> {
        let mut left = ids;
        while !left.is_empty() {
            let batch = left.clone();
            left = self.store.write("remove pruned rows", move |c| rows::remove_some(c, &batch, STEP)).await?;
            tokio::time::sleep(PAUSE).await;
        }
        Ok(())
    }

    async fn delete(self, id: ExecutionId, pass: i64) -> Result<Removed, RetentionError> {
        let execution = self
            .store
            .read("read the execution to delete", move |c| executions::get(c, id))
            .await?
            .ok_or(RetentionError::NotFound(id))?;
        if !execution.status.is_final() {
            return Err(RetentionError::NotFinal { id, status: execution.status });
        }
        if let (Some(worktree), Some(branch)) = (&execution.worktree, &execution.branch) {
            let retire = RetireWorktree {
                id,
                cwd: execution.cwd.clone().into(),
                worktree: worktree.into(),
                branch: branch.clone(),
            };
            match self.changes.send(retire).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(execution = %id, error = %e, "the worktree of a deleted execution stays"),
                Err(e) => tracing::warn!(execution = %id, error = %e, "the change tracker did not answer"),
            }
        }
        let footprint = self.store.read("measure an execution", move |c| rows::footprint(c, id)).await?;
        let candidate = Candidate { id, session_id: execution.session_id };
        let pruning = Pruning { candidate, pass, reason: PruneReason::Deleted, at: now(), footprint };
        match self.store.write("delete an execution", move |c| rows::delete_row(c, &pruning)).await? {
            Ok(()) => {}
            Err(NotDeleted::Missing) => return Err(RetentionError::NotFound(id)),
            Err(NotDeleted::NotFinal(status)) => return Err(RetentionError::NotFinal { id, status }),
        }
        self.remove_rows(vec![id]).await?;
        let event = NewEvent {
            kind: "execution.deleted",
            execution_id: Some(id),
            approval_id: None,
            session_id: execution.session_id,
            workspace: execution.workspace.clone(),
            data: serde_json::json!({ "execution_id": id }),
        };
        self.store.record("record the deletion", move |c, log| log.record(c, event).map(|_| ())).await?;
        Ok(Removed {
            execution_id: id,
            output_lines: footprint.output_lines,
            events: footprint.events,
            bytes: footprint.bytes,
        })
    }
}
