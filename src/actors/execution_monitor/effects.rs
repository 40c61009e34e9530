//! How the ExecutionMonitor carries out the lifecycle: a command for a run goes through
//! [`lifecycle::apply`], then each [`Effect`] it returns is done here, in order (signals,
//! timers, queue slots, rows and events written through the store, the start snapshot
//! and the spawn, the end), and the run is published to the read model.

use std::time::{Duration, Instant};

use actix::prelude::*;
use nix::sys::signal::Signal;

use super::executions::{execution_event, KeepShowing, ProcessEnded, Reply, TurnEnded};
use super::lifecycle::{self, Command, Effect, Ending, Now, Phase, Refused};
use super::process::{self, signal_group, AgentCapture, SpawnSpec};
use super::{ExecutionMonitor, MonitorError};
use crate::actors::approval_arbiter::CancelForExecution;
use crate::actors::change_tracker::{PrepareWorktree, RemoveWorktree, SnapshotEnd, SnapshotStart};
use crate::domain::{ChangesSummary, ExecutionId, Isolation, SandboxMode};
use crate::sandbox::Confinement;
use crate::store::OutputSource;
use crate::store::{agent_activity, executions as rows};

/// Why a command was not applied to a run.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotApplied {
    /// The monitor has no run of that id: it is final, or it never existed.
    #[error("it is not active")]
    NotActive,
    #[error("cannot {} while {}", .0.command, .0.phase)]
    Refused(Refused),
}

impl ExecutionMonitor {
    /// Applies a command to a run and carries out what it asks.
    pub(super) fn command(
        &mut self,
        id: ExecutionId,
        command: Command,
        ctx: &mut Context<Self>,
    ) -> Result<(), NotApplied> {
        let effects = self.transition(id, command)?;
        self.carry_out(id, effects, ctx);
        Ok(())
    }

    /// A client's command: replies with the execution as the transition left it, or
    /// with why it cannot be done (409 with its state, or 404).
    pub(super) fn request(&mut self, id: ExecutionId, command: Command, ctx: &mut Context<Self>) -> Reply {
        let action = command.name();
        let result = match self.transition(id, command) {
            Ok(effects) => {
                let shown = self.runs[&id].execution.clone();
                self.carry_out(id, effects, ctx);
                Ok(shown)
            }
            Err(NotApplied::Refused(_)) => {
                let execution = Box::new(self.runs[&id].execution.clone());
                Err(MonitorError::InvalidTransition { action, execution })
            }
            Err(NotApplied::NotActive) => return self.not_active(id, action),
        };
        Box::pin(fut::ready(result))
    }

    fn transition(&mut self, id: ExecutionId, command: Command) -> Result<Vec<Effect>, NotApplied> {
        let run = self.runs.get_mut(&id).ok_or(NotApplied::NotActive)?;
        lifecycle::apply(run, command, Now::current()).map_err(NotApplied::Refused)
    }

    fn carry_out(&mut self, id: ExecutionId, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        let Some(provider) = self.runs.get(&id).map(|run| run.execution.provider.clone()) else { return };
        for effect in effects {
            match effect {
                Effect::Record(kind) => self.record_status(id, kind),
                Effect::JoinQueue => self.provider_mut(&provider).queue.push(id, true),
                Effect::LeaveQueue => {
                    self.provider_mut(&provider).queue.remove(id);
                    self.refresh_positions(&provider);
                }
                Effect::TakeStartSnapshot => self.take_start_snapshot(id, ctx),
                Effect::PrepareWorktree => self.prepare_worktree(id, ctx),
                Effect::SpawnIn(dir) => self.spawn_in(id, dir, ctx),
                Effect::CountStart => {
                    if self.provider_mut(&provider).queue.started(Instant::now()) {
                        self.try_start(&provider, ctx);
                    }
                }
                Effect::RecordStart(spawned) => self.record_start(id, spawned),
                Effect::AbandonStart => self.provider_mut(&provider).queue.abandon_start(),
                Effect::ReleaseSlot => self.provider_mut(&provider).queue.release(),
                Effect::StartNext => self.try_start(&provider, ctx),
                Effect::Signal(pid, signal) => signal_group(pid, signal),
                Effect::ArmTimeout(after) => self.arm_timeout(id, after, ctx),
                Effect::CancelTimer(timer) => {
                    ctx.cancel_future(timer);
                }
                Effect::Terminate { pid, why } => self.terminate(id, pid, why, ctx),
                Effect::CancelApprovals(reason) => {
                    self.arbiter.do_send(CancelForExecution { execution_id: id, reason });
                }
                Effect::Finish => self.finish(id, ctx),
            }
        }
        self.publish(id);
    }

    /// Paused, resumed or queued after its gate: the row and the event.
    fn record_status(&self, id: ExecutionId, kind: &'static str) {
        let Some(shown) = self.runs.get(&id).map(|run| run.execution.clone()) else { return };
        self.store.record_detached("set execution status", move |c, log| {
            rows::set_status(c, id, shown.status)?;
            log.record(c, execution_event(kind, &shown))?;
            Ok(())
        });
    }

    fn record_start(&self, id: ExecutionId, spawned: process::Spawned) {
        let Some(shown) = self.runs.get(&id).map(|run| run.execution.clone()) else { return };
        let waited = shown.started_at.map(|at| (at - shown.created_at).to_std().unwrap_or_default());
        crate::metrics::metrics().start_latency.observe(waited.unwrap_or_default().as_secs_f64());
        tracing::debug!(execution = %id, pid = spawned.pid, "execution started");
        self.store.record_detached("mark execution started", move |c, log| {
            rows::mark_started(c, &shown, spawned.pid, spawned.start_ticks)?;
            log.record(c, execution_event("execution.started", &shown))?;
            Ok(())
        });
    }

    /// A run given a slot: its start snapshot is taken (the ChangeTracker answers within
    /// its start timeout), then its process is spawned.
    fn take_start_snapshot(&mut self, id: ExecutionId, ctx: &mut Context<Self>) {
        let Some(execution) = self.runs.get(&id).map(|run| &run.execution) else { return };
        if execution.isolation == Isolation::Worktree {
            // Its worktree is its start: the ChangeTracker snapshots the user's work tree
            // (for a base of it) while the worktree is being made.
            self.start_snapshot_taken(id, None, ctx);
            return;
        }
        let snapshot = self.changes.send(SnapshotStart { id, cwd: execution.cwd.clone().into() });
        ctx.spawn(snapshot.into_actor(self).map(move |changes, act, ctx| {
            let changes = changes.unwrap_or_else(|e| {
                Some(ChangesSummary::failed("", format!("the change tracker did not answer: {e}")))
            });
            act.start_snapshot_taken(id, changes, ctx);
        }));
    }

    /// A run's start snapshot is taken: an isolated one gets its worktree made, any
    /// other is spawned where it was asked to run.
    fn start_snapshot_taken(&mut self, id: ExecutionId, changes: Option<ChangesSummary>, ctx: &mut Context<Self>) {
        // Cancelled while the snapshot was taken: its slot is already given back.
        let Some(run) = self.runs.get_mut(&id).filter(|run| matches!(run.phase, Phase::Starting)) else { return };
        run.execution.changes = changes;
        let (isolated, cwd) = (run.execution.isolation == Isolation::Worktree, run.execution.cwd.clone());
        if !self.accepting {
            // Shutting down: it stays queued in the database and starts at the next run.
            let _ = self.command(id, Command::StartPostponed, ctx);
        } else if isolated {
            let _ = self.command(id, Command::Prepare, ctx);
        } else {
            self.spawn_in(id, cwd.into(), ctx);
        }
        self.publish(id);
    }

    /// Asks the ChangeTracker for a run's worktree; a worktree made for a run that is
    /// gone meanwhile (cancelled) is removed again, unless a session's earlier turns
    /// made it.
    fn prepare_worktree(&mut self, id: ExecutionId, ctx: &mut Context<Self>) {
        let Some(execution) = self.runs.get(&id).map(|run| &run.execution) else { return };
        let prepare = PrepareWorktree {
            id,
            cwd: execution.cwd.clone().into(),
            prompt: execution.prompt.clone(),
            base_ref: execution.base_ref.clone(),
            session_id: execution.session_id,
        };
        let cwd = prepare.cwd.clone();
        ctx.spawn(self.changes.send(prepare).into_actor(self).map(move |prepared, act, ctx| {
            let prepared = prepared.unwrap_or_else(|e| Err(format!("the change tracker did not answer: {e}")));
            match prepared {
                Ok(isolated) => {
                    let (worktree, branch) = (isolated.worktree.clone(), isolated.branch.clone());
                    let shared = isolated.shared;
                    if !act.accepting {
                        let _ = act.command(id, Command::StartPostponed, ctx);
                    } else if act.command(id, Command::Prepared(Box::new(isolated)), ctx).is_err() && !shared {
                        act.changes.do_send(RemoveWorktree { cwd, worktree, branch });
                    }
                }
                Err(error) => {
                    tracing::info!(execution = %id, %error, "an isolated execution could not be prepared");
                    let _ = act.command(id, Command::PrepareFailed(error), ctx);
                }
            }
        }));
    }

    /// Spawns a run's process in `dir`.
    fn spawn_in(&mut self, id: ExecutionId, dir: std::path::PathBuf, ctx: &mut Context<Self>) {
        let Some(run) = self.runs.get_mut(&id).filter(|run| matches!(run.phase, Phase::Starting)) else { return };
        let execution = &run.execution;
        let (mut env, sandbox) = {
            let catalog = self.catalog.read();
            let profile = catalog.profiles.get(&execution.profile);
            (
                profile.map(|p| p.spec.env.clone()).unwrap_or_default(),
                profile.map(|p| p.spec.sandbox).unwrap_or_default(),
            )
        };
        env.extend(run.env.clone());
        // The agent acts with a token of its own, never the owner's; its hash was stored
        // with the execution, so a crash can never leave a process carrying it unknown.
        self.settings.agent_tokens.grant(id, execution.session_id, &run.token);
        env.insert("WARDEN_EXECUTION_ID".into(), id.to_string());
        env.insert("WARDEN_URL".into(), self.settings.url.clone());
        env.insert("WARDEN_TOKEN".into(), run.token.token.clone());
        if let Some(session) = execution.session_id {
            env.insert("WARDEN_SESSION_ID".into(), session.to_string());
        }
        let confinement = (sandbox != SandboxMode::Off).then(|| Confinement {
            sandboxer: self.settings.sandboxer.clone(),
            mode: sandbox,
            cwd: dir.clone(),
            tmpdir: env.get("TMPDIR").map(Into::into).or_else(|| std::env::var_os("TMPDIR").map(Into::into)),
        });
        let source =
            OutputSource { execution_id: id, session_id: execution.session_id, workspace: execution.workspace.clone() };
        let monitor = ctx.address();
        let agent = execution.agent.as_ref().map(|agent| AgentCapture {
            format: agent.format,
            conversation: agent.conversation_tokens,
            provider: execution.provider.clone(),
            progress: monitor.clone().recipient(),
        });
        let spec = SpawnSpec { source, argv: execution.argv.clone(), cwd: dir, env, confinement, agent };
        let spawned = process::spawn(&self.capture, spec, self.store.clone(), move |exit| {
            monitor.do_send(ProcessEnded { id, exit })
        });
        match spawned {
            Ok((spawned, output_gate)) => {
                let _ = self.command(id, Command::Spawned(spawned), ctx);
                // Its start is queued: its output may follow.
                drop(output_gate);
            }
            Err(error) => {
                tracing::info!(execution = %id, ?error, "execution could not start");
                let _ = self.command(id, Command::SpawnFailed(error), ctx);
            }
        }
    }

    fn arm_timeout(&mut self, id: ExecutionId, after: Duration, ctx: &mut Context<Self>) {
        let timer = ctx.run_later(after, move |act, ctx| {
            tracing::info!(execution = %id, "timeout: stopping the process group");
            let _ = act.command(id, Command::TimedOut, ctx);
        });
        if let Some(Phase::Running(process)) = self.runs.get_mut(&id).map(|run| &mut run.phase) {
            process.timeout_timer = Some(timer);
        }
    }

    /// Asks a process group to end (SIGCONT first, in case it is stopped, then SIGTERM)
    /// and SIGKILLs it after the grace for `why`.
    fn terminate(&mut self, id: ExecutionId, pid: i32, why: Ending, ctx: &mut Context<Self>) {
        signal_group(pid, Signal::SIGCONT);
        signal_group(pid, Signal::SIGTERM);
        let grace = if why == Ending::Shutdown { self.settings.shutdown_grace } else { self.settings.kill_grace };
        let timer = ctx.run_later(grace, move |act, _| {
            if act.runs.get(&id).and_then(|run| run.phase.process()).is_some_and(|p| p.pid == pid) {
                tracing::info!(execution = %id, "grace period over: SIGKILL to the process group");
                signal_group(pid, Signal::SIGKILL);
            }
        });
        if let Some(Phase::Stopping { process, .. }) = self.runs.get_mut(&id).map(|run| &mut run.phase) {
            process.kill_timer = Some(timer);
        }
    }

    /// A run is final. Its final row is queued behind all of its output, and the run
    /// leaves the read model at once: readers get its stored row, which turns final with
    /// the commit that also sends `execution.finished`. So a client that sees
    /// `succeeded` can read every line, and a client that heard the event never reads
    /// the execution as still running.
    fn finish(&mut self, id: ExecutionId, ctx: &mut Context<Self>) {
        let Some(run) = self.runs.remove(&id) else { return };
        let finished = run.execution;
        // Whatever its processes left behind can no longer act for it.
        self.settings.agent_tokens.revoke(id);
        // Nothing can wait on an ended execution's approvals any more.
        let reason = format!("the execution ended {}", finished.status);
        self.arbiter.do_send(CancelForExecution { execution_id: id, reason });
        if finished.changes.as_ref().is_some_and(ChangesSummary::awaits_end) {
            self.changes.do_send(SnapshotEnd { execution: finished.clone() });
        }
        let (store, monitor) = (self.store.clone(), ctx.address());
        let turn_listener = finished.session_id.and(self.turn_listener.clone());
        actix::spawn(async move {
            let mut row = finished.clone();
            let stored = store.record("finish execution", move |c, log| {
                // Queued behind all of its output: the stored summary is its last.
                if row.agent.is_some() {
                    row.agent = agent_activity::summary(c, id)?.map(Box::new).or(row.agent);
                }
                rows::mark_finished(c, &row)?;
                log.record(c, execution_event("execution.finished", &row))?;
                Ok(row)
            });
            match stored.await {
                Ok(row) => {
                    if let Some(listener) = turn_listener {
                        listener.do_send(TurnEnded { execution: row });
                    }
                }
                Err(e) => {
                    tracing::error!(execution = %id, error = %e, "storing a final state failed");
                    monitor.do_send(KeepShowing { execution: finished });
                }
            }
        });
    }

    /// Shutdown: every running process group gets SIGTERM and the shutdown grace.
    pub(super) fn interrupt_all(&mut self, ctx: &mut Context<Self>) {
        let running: Vec<ExecutionId> =
            self.runs.iter().filter(|(_, run)| run.phase.process().is_some()).map(|(id, _)| *id).collect();
        if !running.is_empty() {
            tracing::info!(
                running = running.len(),
                grace_s = self.settings.shutdown_grace.as_secs(),
                "stopping running executions"
            );
        }
        for id in running {
            let _ = self.command(id, Command::Shutdown, ctx);
        }
    }

    pub(super) fn notify_if_drained(&mut self) {
        if !self.accepting && !self.runs.values().any(|run| run.phase.process().is_some()) {
            for done in self.drained.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// The answer for an execution the monitor has no run of: it is final (409 with its
    /// state) or it never existed (404).
    fn not_active(&self, id: ExecutionId, action: &'static str) -> Reply {
        if let Some(execution) = self.unsaved.get(&id) {
            let execution = Box::new(execution.clone());
            return Box::pin(fut::ready(Err(MonitorError::InvalidTransition { action, execution })));
        }
        let store = self.store.clone();
        Box::pin(
            async move {
                match store.read("get execution", move |c| rows::get(c, id)).await? {
                    Some(execution) => Err(MonitorError::InvalidTransition { action, execution: Box::new(execution) }),
                    None => Err(MonitorError::UnknownExecution(id)),
                }
            }
            .into_actor(self),
        )
    }
}
