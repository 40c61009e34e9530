//! The monitor's lifecycle through its mailbox: a real store, arbiter, change tracker
//! and processes, no HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;

use super::*;
use crate::actors::approval_arbiter::{Decide, ExecutionListener};
use crate::actors::catalog::{Catalog, CatalogSeed};
use crate::actors::change_tracker::git::Git;
use crate::config::ChangeSettings;
use crate::domain::{ApprovalId, ApprovalPolicy, Decision, NewExecution, Profile};
use crate::store::executions as rows;

struct Daemon {
    _dir: tempfile::TempDir,
    work: tempfile::TempDir,
    store: Store,
    monitor: Addr<ExecutionMonitor>,
    arbiter: Addr<ApprovalArbiter>,
    live: LiveExecutions,
}

/// A monitor with the built-in `shell` profile and a gated `careful` one.
async fn daemon() -> Daemon {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("the data dir");
    let store = Store::open(&data.join("warden.db")).expect("a store");
    let mut careful = Profile::builtin_shell();
    careful.name = "careful".into();
    careful.spec.approval = ApprovalPolicy::Always;
    let profiles = BTreeMap::from([("shell".to_owned(), Profile::builtin_shell()), ("careful".to_owned(), careful)]);
    let sandboxer = crate::sandbox::Sandboxer::new(&data).expect("a sandboxer");
    let seed = CatalogSeed { config_profiles: profiles, workspaces: Vec::new(), api_profiles: Vec::new() };
    let catalog = Catalog::new(store.clone(), sandboxer.protected().to_path_buf(), seed).view();
    let settings = MonitorSettings {
        url: "http://127.0.0.1:9".into(),
        agent_tokens: AgentTokens::default(),
        sandboxer,
        kill_grace: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
    };
    let context = Context::<ExecutionMonitor>::new();
    let address = context.address();
    let changes = ChangeTracker::new(
        Git::new(&data.join("git")),
        store.clone(),
        ChangeSettings::default(),
        address.clone().recipient(),
    )
    .start();
    let listener = ExecutionListener { opened: address.clone().recipient(), settled: address.recipient() };
    let arbiter =
        ApprovalArbiter::new(store.clone(), listener, Duration::from_secs(600), ApprovalId(0), Vec::new()).start();
    let seed = MonitorSeed {
        config_providers: BTreeMap::new(),
        api_providers: Vec::new(),
        queued: Vec::new(),
        high_water: (0, 0),
        spend_today: Vec::new(),
    };
    let monitor = ExecutionMonitor::new(store.clone(), settings, arbiter.clone(), None, changes, catalog, seed);
    let live = monitor.live();
    let work = tempfile::tempdir().expect("a work dir");
    Daemon { _dir: dir, work, store, monitor: context.run(monitor), arbiter, live }
}

impl Daemon {
    async fn enqueue(&self, profile: &str, prompt: &str) -> Execution {
        let request = NewExecution {
            prompt: prompt.into(),
            profile: Some(profile.into()),
            workspace: None,
            cwd: Some(self.work.path().to_string_lossy().into_owned()),
            env: BTreeMap::new(),
            timeout_s: None,
            isolation: None,
            base: None,
        };
        self.monitor
            .send(Enqueue { request, turn: None, claim: None })
            .await
            .expect("the monitor answers")
            .expect("enqueued")
    }

    /// Polls the read model, then the database once it has left it, until `done`.
    async fn wait_for(&self, id: ExecutionId, done: impl Fn(&Execution) -> bool) -> Execution {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let shown = match self.live.get(&id) {
                Some(shown) => Some(shown.clone()),
                None => self.store.read("get", move |c| rows::get(c, id)).await.expect("read"),
            };
            if let Some(execution) = shown.filter(|e| done(e)) {
                return execution;
            }
            assert!(std::time::Instant::now() < deadline, "execution {id} never got there");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn refused(result: Result<Execution, MonitorError>) -> (&'static str, ExecutionStatus) {
    match result {
        Err(MonitorError::InvalidTransition { action, execution }) => (action, execution.status),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[actix::test]
async fn a_run_goes_from_queued_to_final_and_then_leaves_the_read_model() {
    let d = daemon().await;
    let queued = d.enqueue("shell", "echo hello").await;
    assert_eq!(queued.status, ExecutionStatus::Queued);
    let ended = d.wait_for(queued.id, |e| e.status.is_final()).await;
    assert_eq!((ended.status, ended.exit_code), (ExecutionStatus::Succeeded, Some(0)));
    assert!(ended.started_at.is_some() && ended.finished_at.is_some());
    // Final and stored: the read model no longer holds it, the database does.
    d.wait_for(queued.id, |_| !d.live.contains_key(&queued.id)).await;
}

#[actix::test]
async fn pause_resume_and_cancel_follow_the_lifecycle_and_refuse_what_it_refuses() {
    let d = daemon().await;
    let id = d.enqueue("shell", "sleep 30").await.id;
    d.wait_for(id, |e| e.status == ExecutionStatus::Running).await;
    assert_eq!(refused(d.monitor.send(Resume { id }).await.unwrap()), ("resume", ExecutionStatus::Running));
    let paused = d.monitor.send(Pause { id }).await.unwrap().expect("paused");
    assert_eq!(paused.status, ExecutionStatus::Paused);
    assert_eq!(d.live.get(&id).map(|e| e.status), Some(ExecutionStatus::Paused), "published at once");
    assert_eq!(refused(d.monitor.send(Pause { id }).await.unwrap()), ("pause", ExecutionStatus::Paused));
    assert_eq!(d.monitor.send(Resume { id }).await.unwrap().expect("resumed").status, ExecutionStatus::Running);
    // Cancelled, it stops: the reply shows it still running, the end says cancelled.
    assert_eq!(d.monitor.send(Cancel { id }).await.unwrap().expect("cancelling").status, ExecutionStatus::Running);
    assert_eq!(refused(d.monitor.send(Pause { id }).await.unwrap()), ("pause", ExecutionStatus::Running));
    let ended = d.wait_for(id, |e| e.status.is_final()).await;
    assert_eq!(ended.status, ExecutionStatus::Cancelled);
    d.wait_for(id, |_| !d.live.contains_key(&id)).await;
    assert_eq!(refused(d.monitor.send(Cancel { id }).await.unwrap()), ("cancel", ExecutionStatus::Cancelled));
    let unknown = d.monitor.send(Cancel { id: ExecutionId(999) }).await.unwrap();
    assert!(matches!(unknown, Err(MonitorError::UnknownExecution(ExecutionId(999)))));
}

#[actix::test]
async fn a_gated_run_starts_only_when_its_own_gate_is_approved() {
    let d = daemon().await;
    let gated = d.enqueue("careful", "echo approved").await;
    assert_eq!(gated.status, ExecutionStatus::PendingApproval);
    let gate = gated.approval_id.expect("its gate is linked before the reply");
    assert_eq!(
        refused(d.monitor.send(Pause { id: gated.id }).await.unwrap()),
        ("pause", ExecutionStatus::PendingApproval)
    );
    let decide = Decide { id: gate, decision: Decision::Approve, reason: None, decided_by: "owner".into() };
    d.arbiter.send(decide).await.unwrap().expect("approved");
    let ended = d.wait_for(gated.id, |e| e.status.is_final()).await;
    assert_eq!((ended.status, ended.approval_id), (ExecutionStatus::Succeeded, Some(gate)));

    let denied = d.enqueue("careful", "echo never").await;
    let gate = denied.approval_id.expect("linked");
    let decide = Decide { id: gate, decision: Decision::Deny, reason: Some("no".into()), decided_by: "owner".into() };
    d.arbiter.send(decide).await.unwrap().expect("denied");
    let ended = d.wait_for(denied.id, |e| e.status.is_final()).await;
    assert_eq!((ended.status, ended.error.as_deref()), (ExecutionStatus::Denied, Some("denied by owner: no")));
    assert!(ended.started_at.is_none());
}
