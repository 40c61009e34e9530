//! The lifecycle, pair by pair: every phase with every command.

use super::*;
use crate::actors::change_tracker::Isolated;
use crate::domain::SandboxApplied;

const TIMER: fn() -> SpawnHandle = || SpawnHandle::default().next();
const KILL: fn() -> SpawnHandle = || SpawnHandle::default().next().next();

fn at(seconds: u64, start: Instant) -> Now {
    Now { instant: start + Duration::from_secs(seconds), wall: DateTime::<Utc>::UNIX_EPOCH }
}

fn process(start: Instant, kill_timer: Option<SpawnHandle>) -> Process {
    Process {
        pid: 4242,
        remaining: Some(Duration::from_secs(60)),
        running_since: start,
        timeout_timer: kill_timer.is_none().then(TIMER),
        kill_timer,
    }
}

fn run_in(phase: &str, start: Instant) -> Run {
    let (phase, status) = match phase {
        "awaiting_approval" => (Phase::AwaitingApproval, ExecutionStatus::PendingApproval),
        "queued" => (Phase::Queued, ExecutionStatus::Queued),
        "starting" => (Phase::Starting, ExecutionStatus::Queued),
        "preparing" => (Phase::Preparing, ExecutionStatus::Queued),
        "running" => (Phase::Running(process(start, None)), ExecutionStatus::Running),
        "paused" => {
            let mut paused = process(start, None);
            paused.timeout_timer = None;
            (Phase::Paused(paused), ExecutionStatus::Paused)
        }
        "stopping" => {
            (Phase::Stopping { why: Ending::Cancel, process: process(start, Some(KILL())) }, ExecutionStatus::Running)
        }
        "ended" => (Phase::Ended, ExecutionStatus::Cancelled),
        other => panic!("no phase {other}"),
    };
    let execution: Execution = serde_json::from_value(serde_json::json!({
        "id": 1, "status": status, "profile": "shell", "provider": "local", "workspace": null,
        "cwd": "/tmp", "prompt": "p", "argv": ["sh"], "timeout_s": 60, "exit_code": null, "error": null,
        "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
        "queue_position": null, "retry_of": null, "session_id": null, "approval_id": null
    }))
    .unwrap();
    Run { execution, env: BTreeMap::new(), token: IssuedToken::new(), phase }
}

fn command(name: &str) -> Command {
    let spawned = Spawned { pid: 4242, start_ticks: Some(1), sandbox: SandboxApplied::ProtectData };
    match name {
        "gate_stored" => Command::GateStored(ApprovalId(7)),
        "gate_approved" => Command::GateApproved(ApprovalId(7)),
        "gate_refused" => Command::GateRefused("denied by owner".into()),
        "slot_granted" => Command::SlotGranted,
        "start_postponed" => Command::StartPostponed,
        "prepare" => Command::Prepare,
        "prepared" => Command::Prepared(Box::new(Isolated {
            worktree: "/w/7".into(),
            branch: "warden/7-x".into(),
            base_commit: "c0ffee".into(),
            base_tree: "7ree".into(),
            base_branch: Some("main".into()),
            work_dir: "/w/7/src".into(),
            shared: false,
        })),
        "prepare_failed" => Command::PrepareFailed("making its worktree failed".into()),
        "spawned" => Command::Spawned(spawned),
        "spawn_failed" => Command::SpawnFailed("command not found: nope".into()),
        "cancel" => Command::Cancel,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "timed_out" => Command::TimedOut,
        "shutdown" => Command::Shutdown,
        "exited" => Command::Exited(ProcessExit { code: Some(0), signal: None, lines: 3 }),
        "agent_waits" => Command::AgentWaits(ApprovalId(9)),
        "agent_answered" => Command::AgentAnswered(ApprovalId(9)),
        other => panic!("no command {other}"),
    }
}

/// Effects in a few words, so the table reads as the lifecycle does.
fn label(effect: &Effect) -> String {
    match effect {
        Effect::Record(kind) => format!("record {kind}"),
        Effect::JoinQueue => "join queue".into(),
        Effect::LeaveQueue => "leave queue".into(),
        Effect::TakeStartSnapshot => "snapshot".into(),
        Effect::PrepareWorktree => "prepare worktree".into(),
        Effect::SpawnIn(dir) => format!("spawn in {}", dir.display()),
        Effect::CountStart => "count start".into(),
        Effect::RecordStart(_) => "record start".into(),
        Effect::AbandonStart => "abandon start".into(),
        Effect::ReleaseSlot => "release slot".into(),
        Effect::StartNext => "start next".into(),
        Effect::Signal(_, signal) => signal.as_str().to_owned(),
        Effect::ArmTimeout(after) => format!("arm timeout {}s", after.as_secs()),
        Effect::CancelTimer(timer) if *timer == TIMER() => "cancel timeout".into(),
        Effect::CancelTimer(_) => "cancel kill".into(),
        Effect::Terminate { why, .. } => format!("terminate {why:?}"),
        Effect::CancelApprovals(_) => "cancel approvals".into(),
        Effect::Finish => "finish".into(),
    }
}

const PHASES: [&str; 8] =
    ["awaiting_approval", "queued", "starting", "preparing", "running", "paused", "stopping", "ended"];
const COMMANDS: [&str; 18] = [
    "gate_stored",
    "gate_approved",
    "gate_refused",
    "slot_granted",
    "start_postponed",
    "prepare",
    "prepared",
    "prepare_failed",
    "spawned",
    "spawn_failed",
    "cancel",
    "pause",
    "resume",
    "timed_out",
    "shutdown",
    "exited",
    "agent_waits",
    "agent_answered",
];

/// Every allowed (phase, command) pair: the phase after it and the effects, in order.
/// Any pair not listed is refused.
const ALLOWED: &[(&str, &str, &str, &[&str])] = &[
    ("awaiting_approval", "gate_stored", "awaiting_approval", &[]),
    ("awaiting_approval", "gate_approved", "queued", &["record execution.queued", "join queue", "start next"]),
    ("awaiting_approval", "gate_refused", "ended", &["finish"]),
    ("awaiting_approval", "cancel", "ended", &["finish"]),
    ("awaiting_approval", "agent_answered", "awaiting_approval", &[]),
    ("queued", "gate_stored", "queued", &[]),
    ("queued", "slot_granted", "starting", &["snapshot"]),
    ("queued", "cancel", "ended", &["leave queue", "finish"]),
    ("queued", "agent_answered", "queued", &[]),
    ("starting", "gate_stored", "starting", &[]),
    ("starting", "start_postponed", "queued", &["abandon start"]),
    ("starting", "spawned", "running", &["count start", "record start", "arm timeout 60s"]),
    ("starting", "spawn_failed", "ended", &["count start", "finish", "release slot", "start next"]),
    ("starting", "cancel", "ended", &["abandon start", "finish", "start next"]),
    ("starting", "agent_answered", "starting", &[]),
    ("starting", "prepare", "preparing", &["prepare worktree"]),
    ("preparing", "gate_stored", "preparing", &[]),
    ("preparing", "prepared", "starting", &["spawn in /w/7/src"]),
    ("preparing", "prepare_failed", "ended", &["count start", "finish", "release slot", "start next"]),
    ("preparing", "start_postponed", "queued", &["abandon start"]),
    ("preparing", "cancel", "ended", &["abandon start", "finish", "start next"]),
    ("preparing", "agent_answered", "preparing", &[]),
    ("running", "gate_stored", "running", &[]),
    ("running", "cancel", "stopping", &["cancel approvals", "cancel timeout", "terminate Cancel"]),
    ("running", "pause", "paused", &["SIGSTOP", "cancel timeout", "record execution.paused"]),
    ("running", "timed_out", "stopping", &["cancel timeout", "terminate Timeout"]),
    ("running", "shutdown", "stopping", &["cancel timeout", "terminate Shutdown"]),
    ("running", "exited", "ended", &["cancel timeout", "finish", "release slot", "start next"]),
    ("running", "agent_waits", "running", &[]),
    ("running", "agent_answered", "running", &[]),
    ("paused", "gate_stored", "paused", &[]),
    ("paused", "cancel", "stopping", &["cancel approvals", "terminate Cancel"]),
    ("paused", "resume", "running", &["SIGCONT", "arm timeout 60s", "record execution.resumed"]),
    ("paused", "shutdown", "stopping", &["terminate Shutdown"]),
    ("paused", "exited", "ended", &["finish", "release slot", "start next"]),
    ("paused", "agent_waits", "paused", &[]),
    ("paused", "agent_answered", "paused", &[]),
    ("stopping", "gate_stored", "stopping", &[]),
    ("stopping", "cancel", "stopping", &[]),
    ("stopping", "timed_out", "stopping", &[]),
    ("stopping", "shutdown", "stopping", &[]),
    ("stopping", "exited", "ended", &["cancel kill", "finish", "release slot", "start next"]),
    ("stopping", "agent_waits", "stopping", &[]),
    ("stopping", "agent_answered", "stopping", &[]),
];

#[test]
fn every_phase_and_command_pair_does_what_the_table_says() {
    let start = Instant::now();
    let mut checked = 0;
    for phase in PHASES {
        for name in COMMANDS {
            let mut run = run_in(phase, start);
            let outcome = apply(&mut run, command(name), at(10, start));
            let allowed = ALLOWED.iter().find(|(p, c, _, _)| *p == phase && *c == name);
            match (allowed, outcome) {
                (Some((_, _, after, effects)), Ok(done)) => {
                    let done: Vec<String> = done.iter().map(label).collect();
                    assert_eq!(done, *effects, "{phase} + {name}");
                    assert_eq!(run.phase.name(), *after, "{phase} + {name}");
                }
                (None, Err(refused)) => {
                    assert_eq!(refused, Refused { command: command(name).name(), phase });
                    assert_eq!(run.phase.name(), phase, "a refused {name} leaves {phase} as it was");
                }
                (Some(_), Err(refused)) => panic!("{phase} + {name} was refused: {refused:?}"),
                (None, Ok(effects)) => panic!("{phase} + {name} should be refused, did {effects:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, PHASES.len() * COMMANDS.len());
}

#[test]
fn the_final_status_follows_from_why_it_was_stopped_and_how_it_exited() {
    let start = Instant::now();
    let exit = |code: Option<i32>, signal: Option<i32>| ProcessExit { code, signal, lines: 0 };
    let cases: [(Option<Ending>, ProcessExit, ExecutionStatus, Option<&str>); 8] = [
        (None, exit(Some(0), None), ExecutionStatus::Succeeded, None),
        (None, exit(Some(3), None), ExecutionStatus::Failed, Some("exited with code 3")),
        (None, exit(None, Some(9)), ExecutionStatus::Failed, Some("killed by signal 9")),
        (Some(Ending::Cancel), exit(Some(0), None), ExecutionStatus::Cancelled, None),
        (Some(Ending::Timeout), exit(None, Some(15)), ExecutionStatus::TimedOut, Some("timed out after 60s")),
        (Some(Ending::Shutdown), exit(Some(0), None), ExecutionStatus::Succeeded, None),
        (
            Some(Ending::Shutdown),
            exit(None, Some(15)),
            ExecutionStatus::Interrupted,
            Some("the daemon stopped while it ran"),
        ),
        (
            Some(Ending::Shutdown),
            exit(Some(1), None),
            ExecutionStatus::Interrupted,
            Some("the daemon stopped while it ran"),
        ),
    ];
    for (why, exited, status, error) in cases {
        let mut run = run_in("running", start);
        if let Some(why) = why {
            run.phase = Phase::Stopping { why, process: process(start, Some(KILL())) };
        }
        apply(&mut run, Command::Exited(exited), at(5, start)).unwrap();
        assert_eq!(run.execution.status, status, "{why:?} {exited:?}");
        assert_eq!(run.execution.error.as_deref(), error, "{why:?} {exited:?}");
        assert_eq!(run.execution.exit_code, exited.code);
        assert!(run.execution.finished_at.is_some());
    }
}

#[test]
fn the_first_reason_to_stop_decides_and_a_pause_stops_the_timeout_clock() {
    let start = Instant::now();
    let mut run = run_in("running", start);
    apply(&mut run, Command::Pause, at(25, start)).unwrap();
    assert!(matches!(&run.phase, Phase::Paused(p) if p.remaining == Some(Duration::from_secs(35))));
    // Paused, the timeout is not armed; resumed 100 s later, 35 s are left.
    assert_eq!(
        apply(&mut run, Command::Resume, at(125, start)).unwrap()[1],
        Effect::ArmTimeout(Duration::from_secs(35))
    );
    assert_eq!(run.execution.status, ExecutionStatus::Running);
    apply(&mut run, Command::Cancel, at(126, start)).unwrap();
    apply(&mut run, Command::Shutdown, at(127, start)).unwrap();
    apply(&mut run, Command::Exited(ProcessExit { code: None, signal: Some(15), lines: 0 }), at(128, start)).unwrap();
    assert_eq!(run.execution.status, ExecutionStatus::Cancelled);
}

#[test]
fn only_the_approval_it_waits_on_clears_the_wait_and_the_gate_sets_its_id() {
    let start = Instant::now();
    let mut run = run_in("running", start);
    apply(&mut run, Command::AgentWaits(ApprovalId(9)), at(1, start)).unwrap();
    apply(&mut run, Command::AgentAnswered(ApprovalId(8)), at(2, start)).unwrap();
    assert_eq!(run.execution.waiting_approval_id, Some(ApprovalId(9)));
    apply(&mut run, Command::AgentAnswered(ApprovalId(9)), at(3, start)).unwrap();
    assert_eq!(run.execution.waiting_approval_id, None);

    let mut gated = run_in("awaiting_approval", start);
    apply(&mut gated, Command::GateApproved(ApprovalId(7)), at(1, start)).unwrap();
    assert_eq!((gated.execution.status, gated.execution.approval_id), (ExecutionStatus::Queued, Some(ApprovalId(7))));
    // A later store link does not change the gate it was released by.
    apply(&mut gated, Command::GateStored(ApprovalId(5)), at(2, start)).unwrap();
    assert_eq!(gated.execution.approval_id, Some(ApprovalId(7)));
}
