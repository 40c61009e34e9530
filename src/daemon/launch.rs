//! Starting the actors: recovery from the last run (running work becomes `interrupted`,
//! its leftover processes are killed), the state each actor starts from, and the order
//! they start in (the monitor and the arbiter, the monitor and the keeper, talk both
//! ways, so their mailboxes are made before they run). `Daemon::build` calls it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::approval_arbiter::{ApprovalArbiter, ExecutionListener};
use crate::actors::catalog::{Catalog, CatalogSeed};
use crate::actors::change_tracker::{git::Git, ChangeTracker, SnapshotEnd};
use crate::actors::client_registry::{event_sink, ClientRegistry};
use crate::actors::execution_monitor::{
    process, utc_day, ExecutionMonitor, ExecutionReader, MonitorSeed, MonitorSettings, TurnEnded,
};
use crate::actors::notifier::{Notifier, Notify};
use crate::actors::retention::Retention;
use crate::actors::session_keeper::SessionKeeper;
use crate::actors::supervisor::{DaemonInfo, SandboxStatus, Supervised, Supervisor};
use crate::config::Config;
use crate::credentials::IssuedToken;
use crate::domain::{now, ApprovalStatus, ExecutionId, NewEvent, SessionStatus};
use crate::store::{agent_activity, approvals, catalog, executions, retention, sessions, Store, StoreError};

/// The addresses of every actor, handed to the HTTP layer.
#[derive(Clone)]
pub struct Actors {
    pub supervisor: Addr<Supervisor>,
    pub catalog: Addr<Catalog>,
    pub monitor: Addr<ExecutionMonitor>,
    pub arbiter: Addr<ApprovalArbiter>,
    pub registry: Addr<ClientRegistry>,
    pub keeper: Addr<SessionKeeper>,
    pub changes: Addr<ChangeTracker>,
    pub notifier: Addr<Notifier>,
    pub retention: Addr<Retention>,
    /// The read side of executions (read model + database).
    pub executions: ExecutionReader,
}

/// Recovers from the last run, loads what the actors start from, starts them (the
/// Catalog, ClientRegistry, ChangeTracker, ApprovalArbiter, ExecutionMonitor and
/// SessionKeeper) and then the Supervisor. Must run inside an actix system.
pub async fn start_actors(
    config: &Config,
    store: Store,
    info: DaemonInfo,
    settings: MonitorSettings,
) -> Result<Actors, StoreError> {
    recover_interrupted(&store).await?;
    if !SandboxStatus::current().available {
        tracing::warn!("this kernel has no Landlock: agents will run unsandboxed (sandbox: unavailable)");
    }
    let (config_profiles, config_providers) = (config.profiles.clone(), config.providers.clone());
    let catalog_seed = store
        .read("load the catalog", move |conn| {
            Ok(CatalogSeed {
                config_profiles,
                workspaces: catalog::all_workspaces(conn)?,
                api_profiles: catalog::all_profiles(conn)?,
            })
        })
        .await?;
    let catalog = Catalog::new(store.clone(), settings.sandboxer.protected().to_path_buf(), catalog_seed);
    let catalog_view = catalog.view();
    let catalog = catalog.start();
    let seed = store
        .read("load state", move |conn| {
            Ok(MonitorSeed {
                config_providers,
                api_providers: catalog::all_providers(conn)?,
                queued: executions::queued(conn)?.into_iter().map(|q| (q, IssuedToken::new())).collect(),
                high_water: executions::high_water(conn)?,
                spend_today: agent_activity::spend_on(conn, &utc_day())?,
            })
        })
        .await?;
    // Each queued execution gets a new agent token, stored before anything can run
    // (what carried the old one was killed above).
    let renewed: Vec<(ExecutionId, String)> =
        seed.queued.iter().map(|(q, token)| (q.execution.id, token.hash.clone())).collect();
    store
        .write("renew agent tokens", move |c| {
            renewed.iter().try_for_each(|(id, hash)| executions::set_agent_token_hash(c, *id, hash))
        })
        .await?;
    if !seed.queued.is_empty() {
        tracing::info!(queued = seed.queued.len(), "queued executions from the last run start again in order");
    }
    let last_seq = ClientRegistry::last_seq_in(&store).await?;
    let undelivered = Arc::new(AtomicUsize::new(0));
    let registry = ClientRegistry::new(config.max_clients, last_seq, undelivered.clone()).start();
    let (notifier, wanted) = Notifier::new(config.notify.clone());
    let notifier = notifier.start();
    let to_clients = event_sink(registry.clone(), undelivered);
    let to_notifier = notifier.clone();
    // Live clients get every committed event; the notifier only the types its targets
    // want (checked here, on the writer thread, by type alone).
    store.set_event_sink(Box::new(move |events| {
        let notify: Vec<_> = events.iter().filter(|e| wanted.any(&e.kind)).cloned().collect();
        if !notify.is_empty() {
            to_notifier.do_send(Notify { events: notify });
        }
        to_clients(events);
    }));
    // The monitor and the arbiter talk both ways: make the monitor's mailbox first,
    // so the arbiter can be given its address before the monitor runs.
    let (max_approval, pending) =
        store.read("load pending approvals", |c| Ok((approvals::max_id(c)?, approvals::pending(c)?))).await?;
    let monitor_context = Context::<ExecutionMonitor>::new();
    let monitor_addr = monitor_context.address();
    let git = Git::new(&config.home.git_dir());
    let changes =
        ChangeTracker::new(git, store.clone(), config.changes.clone(), monitor_addr.clone().recipient()).start();
    let listener = ExecutionListener { opened: monitor_addr.clone().recipient(), settled: monitor_addr.recipient() };
    let arbiter = ApprovalArbiter::new(store.clone(), listener, config.approval_timeout, max_approval, pending).start();
    // Likewise the keeper: the monitor tells it when turns end.
    let keeper_context = Context::<SessionKeeper>::new();
    let turns = keeper_context.address().recipient();
    let monitor = ExecutionMonitor::new(
        store.clone(),
        settings,
        arbiter.clone(),
        Some(turns),
        changes.clone(),
        catalog_view,
        seed,
    );
    let executions = ExecutionReader::new(monitor.live(), store.clone());
    let monitor = monitor_context.run(monitor);
    let (max_session, open_sessions, waiting, ended) = store
        .read("load sessions", |c| {
            let open = sessions::open(c)?;
            // Turns that ended while the daemon was down still need their reply.
            let mut ended = Vec::new();
            for session in open.iter().filter(|s| s.status == SessionStatus::Running) {
                if let Some(id) = session.last_execution_id {
                    if let Some(execution) = executions::get(c, id)? {
                        if execution.status.is_final() {
                            ended.push(execution);
                        }
                    }
                }
            }
            Ok((sessions::max_id(c)?, open, sessions::waiting(c)?, ended))
        })
        .await?;
    let keeper = keeper_context.run(SessionKeeper::new(
        store.clone(),
        catalog.clone(),
        monitor.clone(),
        max_session,
        open_sessions,
        waiting,
    ));
    for execution in ended {
        keeper.do_send(TurnEnded { execution });
    }
    // Executions that ended (or were interrupted) before their end snapshot.
    for execution in store.read("find missing end snapshots", executions::awaiting_end_snapshot).await? {
        changes.do_send(SnapshotEnd { execution });
    }
    let started = serde_json::json!({ "version": info.version, "pid": info.pid, "url": info.url });
    store
        .record("record daemon start", move |c, log| {
            log.record(c, NewEvent::new("daemon.started", started)).map(|_| ())
        })
        .await?;
    let last_pass = store.read("find the last prune", retention::last_pass).await?;
    let retention = Retention::new(store.clone(), config.retention.clone(), changes.clone(), last_pass).start();
    let supervised = Supervised {
        catalog: catalog.clone(),
        monitor: monitor.clone(),
        arbiter: arbiter.clone(),
        registry: registry.clone(),
        changes: changes.clone(),
    };
    let supervisor = Supervisor::new(info, store, supervised).start();
    Ok(Actors { supervisor, catalog, monitor, arbiter, registry, keeper, changes, notifier, retention, executions })
}

/// Executions that were running or paused when the daemon last died are `interrupted`.
/// Whatever of theirs is still alive is killed first: each recorded process group whose
/// leader is still ours (same pid and start time), and every process that still carries
/// the agent token of an execution that could have a process (its hash is stored with the
/// execution, before any process exists), which also finds a group whose leader is gone and a process
/// spawned just before the crash but never recorded as started. Nothing of this
/// daemon's runs yet, so all of those are leftovers.
async fn recover_interrupted(store: &Store) -> Result<(), StoreError> {
    let (unfinished, possibly_spawned) = store
        .read("find unfinished executions", |c| {
            Ok((executions::unfinished_processes(c)?, executions::possibly_spawned(c)?))
        })
        .await?;
    for leftover in &unfinished {
        if let Some(pid) = leftover.pid {
            if process::kill_leftover_group(pid, leftover.start_ticks) {
                tracing::warn!(execution = %leftover.id, pid, "killed the process group of an execution interrupted by a crash");
            }
        }
    }
    let hashes: std::collections::HashSet<String> = possibly_spawned.into_iter().collect();
    let killed = process::kill_leftovers_by_token(&hashes);
    if killed > 0 {
        tracing::warn!(killed, "killed processes left by executions of the last run");
    }
    if unfinished.is_empty() {
        return Ok(());
    }
    // Every change is an event, committed with it: followers of these executions (and
    // of their approvals) learn that they ended.
    let count = store
        .record("interrupt unfinished executions", |c, log| {
            let at = now();
            for mut approval in approvals::pending_of_unfinished_executions(c)? {
                approval.status = ApprovalStatus::Cancelled;
                approval.decided_by = Some("warden".into());
                approval.decided_at = Some(at);
                approval.reason = Some("the execution was interrupted".into());
                approvals::settle(c, &approval)?;
                log.record(c, NewEvent::about_approval("approval.cancelled", &approval))?;
            }
            let interrupted = executions::interrupt_unfinished(c, "the daemon stopped while it ran", at)?;
            for execution in &interrupted {
                log.record(c, NewEvent::about_execution("execution.finished", execution))?;
            }
            Ok(interrupted.len())
        })
        .await?;
    tracing::warn!(count, "executions that were running when the daemon stopped are marked interrupted");
    Ok(())
}
