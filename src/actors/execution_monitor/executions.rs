//! The ExecutionMonitor's execution messages and state machine: enqueue (FIFO per
//! provider), start when a slot and a start token are free, cancel, pause, resume,
//! retry, timeouts, and the end of each process. Every change updates the read model at
//! once and the database through the store's writer, in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use nix::sys::signal::Signal;

use super::gating;
use super::process::{self, signal_group, ProcessExit, SpawnSpec};
use super::queue::NextStart;
use super::{ExecutionMonitor, MonitorError, ProviderState};
use crate::actors::approval_arbiter::{CancelForExecution, Request};
use crate::actors::change_tracker::{ChangesRecorded, SnapshotEnd, SnapshotStart};
use crate::credentials::IssuedToken;
use crate::domain::{
    canonical_dir, fill_template, now, validate_env, ApprovalKind, ApprovalPolicy, ChangesSummary, Execution,
    ExecutionId, ExecutionStatus, NewEvent, NewExecution, ProviderLimits, SandboxMode, SessionTurn, TemplateValues,
    WorkspaceKey,
};
use crate::sandbox::Confinement;
use crate::store::executions as rows;
use crate::store::OutputSource;

type Reply = ResponseActFuture<ExecutionMonitor, Result<Execution, MonitorError>>;

/// Queue an execution; replies once it is stored and in its provider's FIFO queue.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Enqueue {
    pub request: NewExecution,
    /// Set when the execution is a turn of a session.
    pub turn: Option<SessionTurn>,
}

/// Where a session's executions and their places are checked before the session exists.
#[derive(Message, Debug)]
#[rtype(result = "Result<Target, MonitorError>")]
pub struct ResolveTarget {
    pub profile: Option<String>,
    pub workspace: Option<String>,
    pub cwd: Option<String>,
}

/// A checked place to run: the profile's name, the workspace's name (if any), the cwd.
#[derive(Debug, Clone)]
pub struct Target {
    pub profile: String,
    pub workspace: Option<String>,
    pub cwd: String,
}

/// Told to the SessionKeeper when a turn's execution is final and stored.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TurnEnded {
    pub execution: Execution,
}

/// Run a finished execution's request again as a new execution at the back of the queue.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Retry {
    pub id: ExecutionId,
    /// The original request, as stored.
    pub request: NewExecution,
}

/// Cancel: a queued execution leaves its queue; a running one's process group gets
/// SIGTERM, then SIGKILL after the kill grace. Replies with the execution as it is now.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Cancel {
    pub id: ExecutionId,
}

/// SIGSTOP the process group; the execution keeps its slot and its timeout clock stops.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Pause {
    pub id: ExecutionId,
}

/// SIGCONT the process group of a paused execution.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Resume {
    pub id: ExecutionId,
}

/// A process group ended and its output is queued for the store (from `process`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct ProcessEnded {
    id: ExecutionId,
    exit: ProcessExit,
}

/// What the monitor keeps about an execution that is not final.
pub(super) struct Tracked {
    /// The request's own env; the profile's is added when the process starts.
    env: BTreeMap<String, String>,
    /// Its agent token: the hash is stored with its row, the token is granted at spawn.
    token: IssuedToken,
    process: Option<RunningProcess>,
    /// Holds a slot and waits for its start snapshot; the process is spawned next.
    starting: bool,
    /// Why the monitor signalled the process; decides the final status.
    ending: Option<Ending>,
}

struct RunningProcess {
    /// Leader pid, which is also the process group id.
    pid: i32,
    /// Running time left before the timeout; `None` means no limit.
    remaining: Option<Duration>,
    /// When the process last started or resumed running (the timeout clock).
    running_since: Instant,
    timeout_timer: Option<SpawnHandle>,
    kill_timer: Option<SpawnHandle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Cancel,
    Timeout,
    Shutdown,
}

impl Handler<Enqueue> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Enqueue, _: &mut Self::Context) -> Reply {
        self.enqueue(msg.request, None, msg.turn)
    }
}

impl Handler<ResolveTarget> for ExecutionMonitor {
    type Result = Result<Target, MonitorError>;

    fn handle(&mut self, msg: ResolveTarget, _: &mut Self::Context) -> Self::Result {
        let (profile, workspace, cwd) = self.resolve(&msg.profile, &msg.workspace, &msg.cwd)?;
        Ok(Target { profile: profile.name, workspace, cwd })
    }
}

impl Handler<Retry> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Retry, _: &mut Self::Context) -> Reply {
        if let Some(execution) = self.tracked.contains_key(&msg.id).then(|| self.snapshot(msg.id)).flatten() {
            return Box::pin(fut::ready(Err(MonitorError::InvalidTransition {
                action: "retry",
                execution: Box::new(execution),
            })));
        }
        self.enqueue(msg.request, Some(msg.id), None)
    }
}

impl Handler<Cancel> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Reply {
        let id = msg.id;
        let Some(status) = self.live.get(&id).filter(|_| self.tracked.contains_key(&id)).map(|e| e.status) else {
            return self.not_active(id, "cancel");
        };
        match status {
            ExecutionStatus::Queued | ExecutionStatus::PendingApproval => {
                let provider = self.live.get(&id).map(|e| e.provider.clone()).unwrap_or_default();
                if let Some(state) = self.providers.get_mut(&provider) {
                    state.queue.remove(id);
                }
                // One that waits for its start snapshot holds a slot: it is given back.
                let starting = self.tracked.get(&id).is_some_and(|t| t.starting);
                if starting {
                    if let Some(state) = self.providers.get_mut(&provider) {
                        state.queue.abandon_start();
                    }
                }
                let cancelled = self.finish(id, ExecutionStatus::Cancelled, None, None, false);
                if starting {
                    self.try_start(&provider, ctx);
                }
                self.refresh_positions(&provider);
                Box::pin(fut::ready(cancelled.ok_or(MonitorError::UnknownExecution(id))))
            }
            _ => {
                self.arbiter
                    .do_send(CancelForExecution { execution_id: id.0, reason: "the execution was cancelled".into() });
                self.signal_ending(id, Ending::Cancel, self.settings.kill_grace, ctx);
                self.reply_now(id)
            }
        }
    }
}

impl Handler<Pause> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Pause, ctx: &mut Self::Context) -> Reply {
        let id = msg.id;
        let Some(tracked) = self.tracked.get_mut(&id) else { return self.not_active(id, "pause") };
        let status = self.live.get(&id).map(|e| e.status);
        match (&mut tracked.process, tracked.ending, status) {
            (Some(process), None, Some(ExecutionStatus::Running)) => {
                signal_group(process.pid, Signal::SIGSTOP);
                if let Some(remaining) = process.remaining.as_mut() {
                    *remaining = remaining.saturating_sub(process.running_since.elapsed());
                }
                if let Some(timer) = process.timeout_timer.take() {
                    ctx.cancel_future(timer);
                }
                self.set_status(id, ExecutionStatus::Paused);
                self.reply_now(id)
            }
            _ => self.refuse(id, "pause"),
        }
    }
}

impl Handler<Resume> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Resume, ctx: &mut Self::Context) -> Reply {
        let id = msg.id;
        let Some(tracked) = self.tracked.get_mut(&id) else { return self.not_active(id, "resume") };
        let status = self.live.get(&id).map(|e| e.status);
        match (&mut tracked.process, status) {
            (Some(process), Some(ExecutionStatus::Paused)) => {
                signal_group(process.pid, Signal::SIGCONT);
                process.running_since = Instant::now();
                self.set_status(id, ExecutionStatus::Running);
                self.arm_timeout(id, ctx);
                self.reply_now(id)
            }
            _ => self.refuse(id, "resume"),
        }
    }
}

impl Handler<ProcessEnded> for ExecutionMonitor {
    type Result = ();

    fn handle(&mut self, msg: ProcessEnded, ctx: &mut Self::Context) {
        let ProcessEnded { id, exit } = msg;
        let Some(tracked) = self.tracked.get_mut(&id) else { return };
        let ending = tracked.ending;
        let timeout = self.live.get(&id).and_then(|e| e.timeout_s);
        if let Some(process) = tracked.process.take() {
            for timer in [process.timeout_timer, process.kill_timer].into_iter().flatten() {
                ctx.cancel_future(timer);
            }
        }
        let signalled = exit.signal.map(|s| format!("killed by signal {s}"));
        let (status, error) = match (ending, exit.code) {
            (Some(Ending::Cancel), _) => (ExecutionStatus::Cancelled, None),
            (Some(Ending::Timeout), _) => {
                (ExecutionStatus::TimedOut, Some(format!("timed out after {}s", timeout.unwrap_or_default())))
            }
            (Some(Ending::Shutdown), Some(0)) | (None, Some(0)) => (ExecutionStatus::Succeeded, None),
            (Some(Ending::Shutdown), _) => {
                (ExecutionStatus::Interrupted, Some("the daemon stopped while it ran".to_owned()))
            }
            (None, Some(code)) => (ExecutionStatus::Failed, Some(format!("exited with code {code}"))),
            (None, None) => (ExecutionStatus::Failed, signalled),
        };
        tracing::debug!(execution = %id, %status, code = ?exit.code, lines = exit.lines, "execution ended");
        if let Some(finished) = self.finish(id, status, exit.code, error, true) {
            self.try_start(&finished.provider, ctx);
        }
        self.notify_if_drained();
    }
}

impl Handler<ChangesRecorded> for ExecutionMonitor {
    type Result = ();

    /// The end snapshot is stored; an execution still in the read model shows it too.
    fn handle(&mut self, msg: ChangesRecorded, _: &mut Self::Context) {
        if let Some(mut shown) = self.live.get_mut(&msg.id) {
            shown.changes = Some(msg.changes);
        }
    }
}

/// An event about an execution, carrying the whole execution as its data.
pub(super) fn execution_event(kind: &'static str, execution: &Execution) -> NewEvent {
    NewEvent::about_execution(kind, execution)
}

impl ExecutionMonitor {
    /// Validates a request, gives it an id and a place at the back of its provider's
    /// queue, and replies once its row is committed (only then may it start).
    fn enqueue(&mut self, request: NewExecution, retry_of: Option<ExecutionId>, turn: Option<SessionTurn>) -> Reply {
        let (execution, env) = match self.prepare(request, retry_of, turn) {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let (id, provider) = (execution.id, execution.provider.clone());
        let gated = execution.status == ExecutionStatus::PendingApproval;
        let order = self.next_queue_order;
        self.next_queue_order += 1;
        let mut shown = execution;
        if !gated {
            let state = self.provider_mut(&provider);
            state.queue.push(id, false);
            shown.queue_position = Some(state.queue.queued().saturating_sub(1));
        }
        self.live.insert(id, shown.clone());
        let token = IssuedToken::new();
        let hash = token.hash.clone();
        self.tracked.insert(id, Tracked { env: env.clone(), token, process: None, starting: false, ending: None });

        let (store, arbiter) = (self.store.clone(), self.arbiter.clone());
        let request = gated.then(|| gating::approval_request(&shown));
        let write = async move {
            store
                .record("insert execution", move |c, log| {
                    rows::insert(c, &shown, &env, order, &hash)?;
                    log.record(c, execution_event("execution.created", &shown))?;
                    if !gated {
                        log.record(c, execution_event("execution.queued", &shown))?;
                    }
                    Ok(())
                })
                .await?;
            let Some(request) = request else { return Ok(None) };
            let approval = arbiter
                .send(Request { request, kind: ApprovalKind::Gate })
                .await
                .map_err(|source| MonitorError::Unanswered { actor: "approval arbiter", source })?
                .map_err(|e| MonitorError::Approval(Box::new(e)))?;
            store.write("link approval", move |c| rows::set_approval(c, id, approval.id)).await?;
            Ok(Some(approval.id))
        };
        Box::pin(write.into_actor(self).map(
            move |stored: Result<Option<crate::domain::ApprovalId>, MonitorError>, act, ctx| match stored {
                Ok(approval_id) => {
                    if let Some(approval_id) = approval_id {
                        if let Some(mut shown) = act.live.get_mut(&id) {
                            shown.approval_id = Some(approval_id);
                        }
                    } else if let Some(state) = act.providers.get_mut(&provider) {
                        state.queue.mark_stored(id);
                    }
                    let reply = act.snapshot(id).ok_or(MonitorError::UnknownExecution(id));
                    act.try_start(&provider, ctx);
                    reply
                }
                Err(e) => {
                    tracing::error!(execution = %id, error = %e, "storing a new execution failed");
                    if let Some(state) = act.providers.get_mut(&provider) {
                        state.queue.remove(id);
                    }
                    act.tracked.remove(&id);
                    act.live.remove(&id);
                    act.refresh_positions(&provider);
                    Err(e)
                }
            },
        ))
    }

    /// The profile, workspace name and cwd a request names, checked against the catalog.
    fn resolve(
        &self,
        profile: &Option<String>,
        workspace: &Option<String>,
        cwd: &Option<String>,
    ) -> Result<(crate::domain::Profile, Option<String>, String), MonitorError> {
        let profile_name = profile.clone().unwrap_or_else(|| "shell".into());
        let profile = self.profiles.get(&profile_name).ok_or(MonitorError::UnknownProfile(profile_name))?.clone();
        let (workspace, cwd) = match (workspace, cwd) {
            (Some(key), None) => {
                let key = WorkspaceKey::parse(key);
                let found = self
                    .workspaces
                    .values()
                    .find(|w| key.matches(w))
                    .ok_or_else(|| MonitorError::UnknownWorkspace(key.to_string()))?;
                (Some(found.name.clone()), found.path.clone())
            }
            (None, Some(cwd)) => {
                let dir = canonical_dir(cwd).map_err(|e| MonitorError::Invalid(format!("cwd: {e}")))?;
                self.refuse_data_dir(&dir)?;
                (None, dir.to_string_lossy().into_owned())
            }
            _ => return Err(MonitorError::Invalid("give exactly one of workspace and cwd".into())),
        };
        Ok((profile, workspace, cwd))
    }

    /// Checks a request against the catalog and builds the execution it asks for.
    fn prepare(
        &mut self,
        request: NewExecution,
        retry_of: Option<ExecutionId>,
        turn: Option<SessionTurn>,
    ) -> Result<(Execution, BTreeMap<String, String>), MonitorError> {
        if !self.accepting {
            return Err(MonitorError::ShuttingDown);
        }
        let (profile, workspace, cwd) = self.resolve(&request.profile, &request.workspace, &request.cwd)?;
        validate_env(&request.env).map_err(MonitorError::Invalid)?;
        if request.prompt.contains('\0') {
            return Err(MonitorError::Invalid("prompt must not contain NUL bytes".into()));
        }
        if request.timeout_s == Some(0) {
            return Err(MonitorError::Invalid("timeout_s must be at least 1".into()));
        }
        let id = ExecutionId(self.next_id);
        self.next_id += 1;
        // From a session's second turn on, the profile's continue_command (if any).
        let template = match (&turn, &profile.spec.continue_command) {
            (Some(t), Some(continued)) if t.turn > 1 => continued,
            _ => &profile.spec.command,
        };
        // Outside a session, `{session_uuid}` is a fresh UUID, never empty: an agent's
        // `--session-id {session_uuid}` then starts a conversation of its own.
        let fresh_uuid = uuid::Uuid::new_v4().to_string();
        let argv = fill_template(
            template,
            &TemplateValues {
                prompt: &request.prompt,
                workspace: &cwd,
                execution_id: id,
                session_id: turn.as_ref().map(|t| t.session_id),
                session_uuid: Some(turn.as_ref().map_or(fresh_uuid.as_str(), |t| t.session_uuid.as_str())),
                turn: turn.as_ref().map(|t| t.turn),
            },
        );
        let gated = profile.spec.approval == ApprovalPolicy::Always;
        let execution = Execution {
            id,
            status: if gated { ExecutionStatus::PendingApproval } else { ExecutionStatus::Queued },
            profile: profile.name.clone(),
            provider: profile.spec.provider.clone(),
            workspace,
            cwd,
            prompt: request.prompt,
            argv,
            timeout_s: request.timeout_s.or(profile.spec.timeout_s),
            exit_code: None,
            error: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            queue_position: None,
            retry_of,
            session_id: turn.as_ref().map(|t| t.session_id),
            approval_id: None,
            waiting_approval_id: None,
            changes: None,
            sandbox: profile.spec.sandbox.into(),
        };
        Ok((execution, request.env))
    }

    /// Agents never run in warden's data dir: the sandbox hides it from them.
    pub(super) fn refuse_data_dir(&self, dir: &std::path::Path) -> Result<(), MonitorError> {
        if dir.starts_with(self.settings.sandboxer.protected()) {
            return Err(MonitorError::Invalid(format!(
                "{} is inside warden's data dir, where no agent may run",
                dir.display()
            )));
        }
        Ok(())
    }

    /// An execution left queued by the last run joins its queue again, in order, with
    /// the agent token whose hash the Supervisor stored for it.
    pub(super) fn requeue_recovered(
        &mut self,
        execution: Execution,
        env: BTreeMap<String, String>,
        token: IssuedToken,
    ) {
        let id = execution.id;
        let state = self.provider_mut(&execution.provider);
        if execution.status == ExecutionStatus::Queued {
            state.queue.push(id, true);
        }
        self.live.insert(id, execution.clone());
        self.tracked.insert(id, Tracked { env, token, process: None, starting: false, ending: None });
        self.refresh_positions(&execution.provider);
    }

    pub(super) fn provider_mut(&mut self, name: &str) -> &mut ProviderState {
        // A provider can vanish from the config between runs; its executions still run.
        self.providers
            .entry(name.to_owned())
            .or_insert_with(|| ProviderState::new(ProviderLimits::default(), crate::domain::Origin::Config))
    }

    /// Starts whatever the provider's queue allows now; schedules a wake-up when the head
    /// waits for a start token. Called after every change that could let one start.
    pub(super) fn try_start(&mut self, provider: &str, ctx: &mut Context<Self>) {
        if !self.accepting {
            return;
        }
        loop {
            let Some(state) = self.providers.get_mut(provider) else { return };
            match state.queue.next_start(Instant::now()) {
                NextStart::Start(id) => self.start(id, ctx),
                NextStart::WaitFor(delay) => {
                    if state.wake.is_none() {
                        let name = provider.to_owned();
                        state.wake = Some(ctx.run_later(delay, move |act, ctx| {
                            if let Some(state) = act.providers.get_mut(&name) {
                                state.wake = None;
                            }
                            act.try_start(&name, ctx);
                        }));
                    }
                    break;
                }
                NextStart::Idle => break,
            }
        }
        self.refresh_positions(provider);
    }

    /// An execution has just been given a slot: its start snapshot is taken (the
    /// ChangeTracker answers within its start timeout), then its process is spawned.
    fn start(&mut self, id: ExecutionId, ctx: &mut Context<Self>) {
        let Some(tracked) = self.tracked.get_mut(&id) else { return };
        tracked.starting = true;
        let Some(cwd) = self.live.get_mut(&id).map(|mut shown| {
            shown.queue_position = None;
            shown.cwd.clone()
        }) else {
            return;
        };
        let snapshot = self.changes.send(SnapshotStart { id, cwd: cwd.into() });
        ctx.spawn(snapshot.into_actor(self).map(move |changes, act, ctx| {
            let changes = changes.unwrap_or_else(|e| {
                Some(ChangesSummary::failed("", format!("the change tracker did not answer: {e}")))
            });
            act.spawn_process(id, changes, ctx);
        }));
    }

    /// Spawns the process of an execution whose start snapshot is taken.
    fn spawn_process(&mut self, id: ExecutionId, changes: Option<ChangesSummary>, ctx: &mut Context<Self>) {
        // Cancelled while the snapshot was taken: its slot is already given back.
        let Some(tracked) = self.tracked.get_mut(&id).filter(|t| t.starting) else { return };
        tracked.starting = false;
        let request_env = tracked.env.clone();
        let token = tracked.token.clone();
        let Some(execution) = self.snapshot(id) else { return };
        if !self.accepting {
            // Shutting down: it stays queued in the database and starts at the next run.
            if let Some(state) = self.providers.get_mut(&execution.provider) {
                state.queue.abandon_start();
            }
            return;
        }
        let profile = self.profiles.get(&execution.profile);
        let mut env = profile.map(|p| p.spec.env.clone()).unwrap_or_default();
        let sandbox = profile.map(|p| p.spec.sandbox).unwrap_or_default();
        env.extend(request_env);
        // The agent acts with a token of its own, never the owner's; its hash was stored
        // with the execution, so a crash can never leave a process carrying it unknown.
        self.settings.agent_tokens.grant(id, execution.session_id, &token);
        env.insert("WARDEN_EXECUTION_ID".into(), id.to_string());
        env.insert("WARDEN_URL".into(), self.settings.url.clone());
        env.insert("WARDEN_TOKEN".into(), token.token);
        if let Some(session) = execution.session_id {
            env.insert("WARDEN_SESSION_ID".into(), session.to_string());
        }
        let confinement = (sandbox != SandboxMode::Off).then(|| Confinement {
            sandboxer: self.settings.sandboxer.clone(),
            mode: sandbox,
            cwd: execution.cwd.clone().into(),
            tmpdir: env.get("TMPDIR").map(Into::into).or_else(|| std::env::var_os("TMPDIR").map(Into::into)),
        });
        let source =
            OutputSource { execution_id: id, session_id: execution.session_id, workspace: execution.workspace.clone() };
        let spec =
            SpawnSpec { source, argv: execution.argv.clone(), cwd: execution.cwd.clone().into(), env, confinement };
        let monitor = ctx.address();
        let spawned = process::spawn(&self.capture, spec, self.store.clone(), move |exit| {
            monitor.do_send(ProcessEnded { id, exit })
        });
        if let Some(mut shown) = self.live.get_mut(&id) {
            shown.changes = changes;
        }
        // The start rate counts from here; the next in line may now be given a slot.
        if let Some(state) = self.providers.get_mut(&execution.provider) {
            state.queue.started(Instant::now());
        }
        match spawned {
            Ok((spawned, output_gate)) => {
                let started_at = now();
                let waited = (started_at - execution.created_at).to_std().unwrap_or_default();
                crate::metrics::metrics().start_latency.observe(waited.as_secs_f64());
                if let Some(mut shown) = self.live.get_mut(&id) {
                    shown.status = ExecutionStatus::Running;
                    shown.started_at = Some(started_at);
                    shown.sandbox = spawned.sandbox;
                }
                if let Some(tracked) = self.tracked.get_mut(&id) {
                    tracked.process = Some(RunningProcess {
                        pid: spawned.pid,
                        remaining: execution.timeout_s.map(Duration::from_secs),
                        running_since: Instant::now(),
                        timeout_timer: None,
                        kill_timer: None,
                    });
                }
                self.arm_timeout(id, ctx);
                let shown = self.snapshot(id);
                self.store.record_detached("mark execution started", move |c, log| {
                    if let Some(shown) = &shown {
                        rows::mark_started(c, shown, spawned.pid, spawned.start_ticks)?;
                        log.record(c, execution_event("execution.started", shown))?;
                    }
                    Ok(())
                });
                // Its start is queued: its output may follow.
                drop(output_gate);
                tracing::debug!(execution = %id, pid = spawned.pid, "execution started");
            }
            Err(error) => {
                tracing::info!(execution = %id, ?error, "execution could not start");
                self.finish(id, ExecutionStatus::Failed, None, Some(error), true);
            }
        }
        self.try_start(&execution.provider, ctx);
    }

    fn arm_timeout(&mut self, id: ExecutionId, ctx: &mut Context<Self>) {
        let Some(process) = self.tracked.get_mut(&id).and_then(|t| t.process.as_mut()) else { return };
        if let Some(remaining) = process.remaining {
            process.timeout_timer = Some(ctx.run_later(remaining, move |act, ctx| {
                tracing::info!(execution = %id, "timeout: stopping the process group");
                act.signal_ending(id, Ending::Timeout, act.settings.kill_grace, ctx);
            }));
        }
    }

    /// Asks a running process group to end (SIGTERM; SIGCONT first, in case it is
    /// stopped) and SIGKILLs it after `grace`. The first reason given decides the
    /// final status.
    fn signal_ending(&mut self, id: ExecutionId, ending: Ending, grace: Duration, ctx: &mut Context<Self>) {
        let Some(tracked) = self.tracked.get_mut(&id) else { return };
        let Some(process) = tracked.process.as_mut() else { return };
        if tracked.ending.is_none() {
            tracked.ending = Some(ending);
        }
        if let Some(timer) = process.timeout_timer.take() {
            ctx.cancel_future(timer);
        }
        let pid = process.pid;
        signal_group(pid, Signal::SIGCONT);
        signal_group(pid, Signal::SIGTERM);
        if process.kill_timer.is_none() {
            process.kill_timer = Some(ctx.run_later(grace, move |act, _| {
                if act.tracked.get(&id).is_some_and(|t| t.process.is_some()) {
                    tracing::info!(execution = %id, "grace period over: SIGKILL to the process group");
                    signal_group(pid, Signal::SIGKILL);
                }
            }));
        }
    }

    /// Shutdown: every running process group gets SIGTERM and the shutdown grace.
    pub(super) fn interrupt_all(&mut self, ctx: &mut Context<Self>) {
        let running: Vec<ExecutionId> =
            self.tracked.iter().filter(|(_, t)| t.process.is_some()).map(|(id, _)| *id).collect();
        if !running.is_empty() {
            tracing::info!(
                running = running.len(),
                grace_s = self.settings.shutdown_grace.as_secs(),
                "stopping running executions"
            );
        }
        for id in running {
            self.signal_ending(id, Ending::Shutdown, self.settings.shutdown_grace, ctx);
        }
    }

    pub(super) fn notify_if_drained(&mut self) {
        if !self.accepting && !self.tracked.values().any(|t| t.process.is_some()) {
            for done in self.drained.drain(..) {
                let _ = done.send(());
            }
        }
    }

    /// Makes an execution final. Its final row is queued behind all of its output, and
    /// the execution leaves the read model at once: readers get its stored row, which
    /// turns final with the commit that also sends `execution.finished`. So a client
    /// that sees `succeeded` can read every line, and a client that heard the event
    /// never reads the execution as still running. Returns the final execution.
    pub(super) fn finish(
        &mut self,
        id: ExecutionId,
        status: ExecutionStatus,
        exit_code: Option<i32>,
        error: Option<String>,
        held_slot: bool,
    ) -> Option<Execution> {
        self.tracked.remove(&id);
        // Whatever its processes left behind can no longer act for it.
        self.settings.agent_tokens.revoke(id);
        let mut finished = self.live.get_mut(&id).map(|mut shown| {
            shown.queue_position = None;
            shown.clone()
        })?;
        finished.status = status;
        finished.exit_code = exit_code;
        finished.error = error;
        finished.finished_at = Some(now());
        if held_slot {
            if let Some(state) = self.providers.get_mut(&finished.provider) {
                state.queue.release();
            }
        }
        // Nothing can wait on an ended execution's approvals any more.
        let reason = format!("the execution ended {status}");
        self.arbiter.do_send(CancelForExecution { execution_id: id.0, reason });
        if finished.changes.as_ref().is_some_and(ChangesSummary::awaits_end) {
            self.changes.do_send(SnapshotEnd { execution: finished.clone() });
        }
        self.live.remove(&id);
        let (store, live, stored) = (self.store.clone(), self.live.clone(), finished.clone());
        let turn_listener = finished.session_id.and(self.turn_listener.clone());
        actix::spawn(async move {
            let row = stored.clone();
            let finished = store.record("finish execution", move |c, log| {
                rows::mark_finished(c, &row)?;
                log.record(c, execution_event("execution.finished", &row))?;
                Ok(())
            });
            match finished.await {
                Ok(()) => {
                    if let Some(listener) = turn_listener {
                        listener.do_send(TurnEnded { execution: stored });
                    }
                }
                // The read model shows the final state, so what clients see stays true.
                Err(e) => {
                    tracing::error!(execution = %id, error = %e, "storing a final state failed");
                    live.insert(id, stored);
                }
            }
        });
        Some(finished)
    }

    /// Paused or running again: the read model, the row and the event.
    fn set_status(&mut self, id: ExecutionId, status: ExecutionStatus) {
        let Some(shown) = self.live.get_mut(&id).map(|mut shown| {
            shown.status = status;
            shown.clone()
        }) else {
            return;
        };
        let kind = if status == ExecutionStatus::Paused { "execution.paused" } else { "execution.resumed" };
        self.store.record_detached("set execution status", move |c, log| {
            rows::set_status(c, id, status)?;
            log.record(c, execution_event(kind, &shown))?;
            Ok(())
        });
    }

    /// Keeps `queue_position` exact for every waiting execution of a provider.
    pub(super) fn refresh_positions(&self, provider: &str) {
        let Some(state) = self.providers.get(provider) else { return };
        for (position, id) in state.queue.order().enumerate() {
            if let Some(mut shown) = self.live.get_mut(&id) {
                shown.queue_position = Some(position as u32);
            }
        }
    }

    fn snapshot(&self, id: ExecutionId) -> Option<Execution> {
        self.live.get(&id).map(|e| e.clone())
    }

    fn reply_now(&self, id: ExecutionId) -> Reply {
        Box::pin(fut::ready(self.snapshot(id).ok_or(MonitorError::UnknownExecution(id))))
    }

    fn refuse(&self, id: ExecutionId, action: &'static str) -> Reply {
        let result = match self.snapshot(id) {
            Some(execution) => Err(MonitorError::InvalidTransition { action, execution: Box::new(execution) }),
            None => Err(MonitorError::UnknownExecution(id)),
        };
        Box::pin(fut::ready(result))
    }

    /// The answer for an execution the monitor no longer tracks: it is final (409 with
    /// its state) or it never existed (404).
    fn not_active(&self, id: ExecutionId, action: &'static str) -> Reply {
        if self.live.contains_key(&id) {
            return self.refuse(id, action);
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
