//! The lifecycle of one execution as a pure state machine. A [`Run`] is in one
//! [`Phase`]; [`apply`] takes a [`Command`] and either moves the run on and says what must
//! be done about it ([`Effect`]s, which the ExecutionMonitor carries out: signals, rows,
//! queue slots, timers) or refuses it. No I/O and no clock but the one passed in, so the
//! whole lifecycle is this one `match`, tested below pair by pair.
//!
//! ```text
//!                  gate approved            slot granted              spawned
//! AwaitingApproval ─────────────▶ Queued ──────────────▶ Starting ──────────────▶ Running ⇄ Paused
//!        │                         ▲  │                  │   ▲                  (pause / resume)
//!        │                         │  │        prepare   ▼   │ prepared                 │
//!        │                         │  │     (isolated) Preparing                        │
//!        │                         └──┼── start postponed (from Starting or Preparing)  │
//!        │ gate refused, cancel       │ cancel        spawn or prepare failed, cancel  │ cancel, shutdown,
//!        ▼                            ▼                      ▼                         ▼ timeout (running)
//!      Ended                        Ended                  Ended                  Stopping { why }
//!
//!                 Running, Paused, Stopping ─── exited ───▶ Ended
//! ```
//!
//! Every final state is the phase `Ended`, which takes no command.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::SpawnHandle;
use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;

use super::process::{ProcessExit, Spawned};
use crate::actors::change_tracker::Isolated;
use crate::credentials::IssuedToken;
use crate::domain::{ApprovalId, Execution, ExecutionStatus};

/// One execution the monitor works on: what clients see of it, what only the monitor
/// needs, and where it is in its lifecycle.
pub struct Run {
    /// What clients see; the monitor publishes it to the read model after each change.
    pub execution: Execution,
    /// The request's own env; the profile's is added when the process starts.
    pub env: BTreeMap<String, String>,
    /// Its agent token: the hash is stored with its row, the token is granted at spawn.
    pub token: IssuedToken,
    pub phase: Phase,
}

/// Where a run is.
#[derive(Debug)]
pub enum Phase {
    /// Gated: waits for the owner's answer to its gate approval.
    AwaitingApproval,
    /// In its provider's queue.
    Queued,
    /// Holds a slot; its start snapshot is being taken, then its process is spawned.
    Starting,
    /// Isolated: its worktree is being made, then its process is spawned there.
    Preparing,
    Running(Process),
    /// SIGSTOPped; keeps its slot, its timeout clock stands still.
    Paused(Process),
    /// Signalled to end for `why`, which decides its final status; not exited yet.
    Stopping {
        why: Ending,
        process: Process,
    },
    /// Ended: its execution holds the final status. The monitor lets it go once it has
    /// carried out the `Finish`.
    Ended,
}

impl Phase {
    pub fn name(&self) -> &'static str {
        match self {
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::Queued => "queued",
            Phase::Starting => "starting",
            Phase::Preparing => "preparing",
            Phase::Running(_) => "running",
            Phase::Paused(_) => "paused",
            Phase::Stopping { .. } => "stopping",
            Phase::Ended => "ended",
        }
    }

    pub fn process(&self) -> Option<&Process> {
        match self {
            Phase::Running(process) | Phase::Paused(process) | Phase::Stopping { process, .. } => Some(process),
            _ => None,
        }
    }
}

/// A run's process group.
#[derive(Debug)]
pub struct Process {
    /// Leader pid, which is also the process group id.
    pub pid: i32,
    /// Running time left before the timeout; `None` means no limit.
    pub remaining: Option<Duration>,
    /// When it last started or resumed running (the timeout clock).
    pub running_since: Instant,
    pub timeout_timer: Option<SpawnHandle>,
    /// The SIGKILL after the grace, once it was asked to end.
    pub kill_timer: Option<SpawnHandle>,
}

/// Why the monitor asked a process group to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Cancel,
    Timeout,
    Shutdown,
}

/// What happens to a run.
#[derive(Debug)]
pub enum Command {
    /// Its gate approval is stored: its id is shown from now on.
    GateStored(ApprovalId),
    /// The owner approved its gate: it joins the back of its queue.
    GateApproved(ApprovalId),
    /// Its gate ended without approval (denied, expired or cancelled), for this reason.
    GateRefused(String),
    /// Its provider gave it a slot.
    SlotGranted,
    /// The daemon began to stop while its start snapshot was taken: it stays queued in
    /// the database and starts at the next run.
    StartPostponed,
    /// Isolated, its start snapshot taken: its worktree is to be made.
    Prepare,
    /// Its worktree is made.
    Prepared(Box<Isolated>),
    PrepareFailed(String),
    Spawned(Spawned),
    SpawnFailed(String),
    Cancel,
    Pause,
    Resume,
    TimedOut,
    Shutdown,
    /// Its process group ended and its output is stored.
    Exited(ProcessExit),
    /// An agent inside it waits on this approval.
    AgentWaits(ApprovalId),
    /// An approval it may wait on was answered (or ended).
    AgentAnswered(ApprovalId),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::GateStored(_) => "link its approval",
            Command::GateApproved(_) => "approve",
            Command::GateRefused(_) => "deny",
            Command::SlotGranted => "start",
            Command::StartPostponed => "postpone",
            Command::Prepare | Command::Prepared(_) | Command::PrepareFailed(_) => "prepare",
            Command::Spawned(_) | Command::SpawnFailed(_) => "spawn",
            Command::Cancel => "cancel",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::TimedOut => "time out",
            Command::Shutdown => "interrupt",
            Command::Exited(_) => "end",
            Command::AgentWaits(_) => "wait on an approval",
            Command::AgentAnswered(_) => "stop waiting on an approval",
        }
    }
}

/// What the monitor must do for a run after a transition, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect {
    /// Store its new status with this event (`execution.queued`, `.paused`, `.resumed`).
    Record(&'static str),
    /// Join the back of its provider's queue.
    JoinQueue,
    /// Leave its provider's queue.
    LeaveQueue,
    /// Take its start snapshot; a `Spawned` or `SpawnFailed` (or `StartPostponed`) follows.
    TakeStartSnapshot,
    /// Make its worktree; `Prepared` or `PrepareFailed` follows.
    PrepareWorktree,
    /// Spawn its process in this directory (its worktree).
    SpawnIn(std::path::PathBuf),
    /// Its process started (or failed to): the start rate counts from now, and the next
    /// in line, held back under a start rate while this one started, may go.
    CountStart,
    /// Store its start (pid and start time, `execution.started`).
    RecordStart(Spawned),
    /// Give back a slot whose process never started (no start is counted).
    AbandonStart,
    /// Give its slot back.
    ReleaseSlot,
    /// Let the next of its provider's queue start.
    StartNext,
    Signal(i32, Signal),
    /// Stop its timeout at this much running time.
    ArmTimeout(Duration),
    CancelTimer(SpawnHandle),
    /// SIGCONT and SIGTERM to its group, SIGKILL after the grace for `why`.
    Terminate {
        pid: i32,
        why: Ending,
    },
    /// Cancel the approvals its agents asked for, for this reason.
    CancelApprovals(String),
    /// It is final (its execution says how): store it with `execution.finished`, revoke
    /// its token, cancel its approvals, take its end snapshot, tell its session.
    Finish,
}

/// Why a command was refused: it makes no sense in the run's phase.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub command: &'static str,
    pub phase: &'static str,
}

/// The time of a transition: the monotonic clock for timeouts, the wall clock for the
/// execution's timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    pub fn current() -> Self {
        Now { instant: Instant::now(), wall: crate::domain::now() }
    }
}

/// The lifecycle: moves `run` on by `command` and says what to do, or refuses.
pub fn apply(run: &mut Run, command: Command, now: Now) -> Result<Vec<Effect>, Refused> {
    use Command as C;
    use Effect as E;
    let refused = Refused { command: command.name(), phase: run.phase.name() };
    if matches!(run.phase, Phase::Ended) {
        return Err(refused);
    }
    let execution = &mut run.execution;
    // Commands every phase takes alike.
    match command {
        C::GateStored(id) => {
            execution.approval_id.get_or_insert(id);
            return Ok(vec![]);
        }
        C::AgentAnswered(id) => {
            if execution.waiting_approval_id == Some(id) {
                execution.waiting_approval_id = None;
            }
            return Ok(vec![]);
        }
        _ => {}
    }
    let phase = std::mem::replace(&mut run.phase, Phase::Queued);
    let (phase, effects) = match (phase, command) {
        (Phase::AwaitingApproval, C::GateApproved(id)) => {
            execution.status = ExecutionStatus::Queued;
            execution.approval_id = Some(id);
            (Phase::Queued, vec![E::Record("execution.queued"), E::JoinQueue, E::StartNext])
        }
        (Phase::AwaitingApproval, C::GateRefused(why)) => {
            end(execution, ExecutionStatus::Denied, None, Some(why), now);
            (Phase::Ended, vec![E::Finish])
        }
        (Phase::AwaitingApproval, C::Cancel) => {
            end(execution, ExecutionStatus::Cancelled, None, None, now);
            (Phase::Ended, vec![E::Finish])
        }

        (Phase::Queued, C::SlotGranted) => {
            execution.queue_position = None;
            (Phase::Starting, vec![E::TakeStartSnapshot])
        }
        (Phase::Queued, C::Cancel) => {
            end(execution, ExecutionStatus::Cancelled, None, None, now);
            (Phase::Ended, vec![E::LeaveQueue, E::Finish])
        }

        (Phase::Starting, C::Spawned(spawned)) => {
            execution.status = ExecutionStatus::Running;
            execution.started_at = Some(now.wall);
            execution.sandbox = spawned.sandbox;
            let remaining = execution.timeout_s.map(Duration::from_secs);
            let process = Process {
                pid: spawned.pid,
                remaining,
                running_since: now.instant,
                timeout_timer: None,
                kill_timer: None,
            };
            let mut effects = vec![E::CountStart, E::RecordStart(spawned)];
            effects.extend(remaining.map(E::ArmTimeout));
            (Phase::Running(process), effects)
        }
        (Phase::Starting, C::SpawnFailed(error)) => {
            end(execution, ExecutionStatus::Failed, None, Some(error), now);
            (Phase::Ended, vec![E::CountStart, E::Finish, E::ReleaseSlot, E::StartNext])
        }
        (Phase::Starting | Phase::Preparing, C::StartPostponed) => (Phase::Queued, vec![E::AbandonStart]),
        (Phase::Starting, C::Prepare) => (Phase::Preparing, vec![E::PrepareWorktree]),
        (Phase::Preparing, C::Prepared(isolated)) => {
            execution.branch = Some(isolated.branch.clone());
            execution.worktree = Some(isolated.worktree.display().to_string());
            execution.base = Some(isolated.base_commit.clone());
            execution.base_branch = isolated.base_branch.clone();
            // Its changes are counted from its base, in its worktree (whatever the
            // snapshot of the user's work tree found: the base is what it starts from).
            execution.changes = Some(crate::domain::ChangesSummary {
                repo_root: isolated.worktree.display().to_string(),
                head: Some(isolated.base_commit.clone()),
                start_tree: Some(isolated.base_tree.clone()),
                ..crate::domain::ChangesSummary::default()
            });
            (Phase::Starting, vec![E::SpawnIn(isolated.work_dir)])
        }
        (Phase::Preparing, C::PrepareFailed(error)) => {
            end(execution, ExecutionStatus::Failed, None, Some(error), now);
            (Phase::Ended, vec![E::CountStart, E::Finish, E::ReleaseSlot, E::StartNext])
        }
        (Phase::Starting | Phase::Preparing, C::Cancel) => {
            end(execution, ExecutionStatus::Cancelled, None, None, now);
            (Phase::Ended, vec![E::AbandonStart, E::Finish, E::StartNext])
        }

        (Phase::Running(mut process), C::Pause) => {
            if let Some(remaining) = process.remaining.as_mut() {
                *remaining = remaining.saturating_sub(now.instant.saturating_duration_since(process.running_since));
            }
            execution.status = ExecutionStatus::Paused;
            let mut effects = vec![E::Signal(process.pid, Signal::SIGSTOP)];
            effects.extend(process.timeout_timer.take().map(E::CancelTimer));
            effects.push(E::Record("execution.paused"));
            (Phase::Paused(process), effects)
        }
        (Phase::Paused(mut process), C::Resume) => {
            process.running_since = now.instant;
            execution.status = ExecutionStatus::Running;
            let mut effects = vec![E::Signal(process.pid, Signal::SIGCONT)];
            effects.extend(process.remaining.map(E::ArmTimeout));
            effects.push(E::Record("execution.resumed"));
            (Phase::Running(process), effects)
        }
        (Phase::Running(process) | Phase::Paused(process), C::Cancel) => {
            let (stopping, then) = stop(process, Ending::Cancel);
            let mut effects = vec![E::CancelApprovals("the execution was cancelled".into())];
            effects.extend(then);
            (stopping, effects)
        }
        (Phase::Running(process), C::TimedOut) => stop(process, Ending::Timeout),
        (Phase::Running(process) | Phase::Paused(process), C::Shutdown) => stop(process, Ending::Shutdown),
        // The first reason given decides the final status; the process is ending already.
        (stopping @ Phase::Stopping { .. }, C::Cancel | C::TimedOut | C::Shutdown) => (stopping, vec![]),

        (Phase::Running(process) | Phase::Paused(process), C::Exited(exit)) => {
            exited(execution, process, None, exit, now)
        }
        (Phase::Stopping { why, process }, C::Exited(exit)) => exited(execution, process, Some(why), exit, now),

        (running @ (Phase::Running(_) | Phase::Paused(_) | Phase::Stopping { .. }), C::AgentWaits(id)) => {
            execution.waiting_approval_id = Some(id);
            (running, vec![])
        }

        (phase, _) => {
            run.phase = phase;
            return Err(refused);
        }
    };
    run.phase = phase;
    Ok(effects)
}

/// The process is asked to end for `why`.
fn stop(mut process: Process, why: Ending) -> (Phase, Vec<Effect>) {
    let mut effects: Vec<Effect> = process.timeout_timer.take().map(Effect::CancelTimer).into_iter().collect();
    effects.push(Effect::Terminate { pid: process.pid, why });
    (Phase::Stopping { why, process }, effects)
}

/// The process group ended: the final status follows from why it was asked to end (if
/// it was) and how it exited.
fn exited(
    execution: &mut Execution,
    mut process: Process,
    why: Option<Ending>,
    exit: ProcessExit,
    now: Now,
) -> (Phase, Vec<Effect>) {
    let (status, error) = match (why, exit.code) {
        (Some(Ending::Cancel), _) => (ExecutionStatus::Cancelled, None),
        (Some(Ending::Timeout), _) => {
            (ExecutionStatus::TimedOut, Some(format!("timed out after {}s", execution.timeout_s.unwrap_or_default())))
        }
        (Some(Ending::Shutdown), Some(0)) | (None, Some(0)) => (ExecutionStatus::Succeeded, None),
        (Some(Ending::Shutdown), _) => {
            (ExecutionStatus::Interrupted, Some("the daemon stopped while it ran".to_owned()))
        }
        (None, Some(code)) => (ExecutionStatus::Failed, Some(format!("exited with code {code}"))),
        (None, None) => (ExecutionStatus::Failed, exit.signal.map(|s| format!("killed by signal {s}"))),
    };
    end(execution, status, exit.code, error, now);
    let mut effects: Vec<Effect> = [process.timeout_timer.take(), process.kill_timer.take()]
        .into_iter()
        .flatten()
        .map(Effect::CancelTimer)
        .collect();
    effects.extend([Effect::Finish, Effect::ReleaseSlot, Effect::StartNext]);
    (Phase::Ended, effects)
}

fn end(execution: &mut Execution, status: ExecutionStatus, exit_code: Option<i32>, error: Option<String>, now: Now) {
    execution.status = status;
    execution.exit_code = exit_code;
    execution.error = error;
    execution.finished_at = Some(now.wall);
    execution.queue_position = None;
}

#[cfg(test)]
mod tests;
