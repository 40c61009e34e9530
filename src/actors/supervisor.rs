//! `Supervisor` starts the other actors in order (the store is open and migrated before
//! it runs), answers for the daemon as a whole (`/api/v1/status`) and owns shutdown:
//! stop accepting work, settle what runs, flush the store. `daemon.rs` launches it.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::approval_arbiter::{ApprovalArbiter, CountPending, ExecutionListener, StopSettling};
use super::catalog::{Catalog, CatalogSeed, StopCataloguing};
use super::change_tracker::{git::Git, ChangeTracker, SnapshotEnd, StopRecording};
use super::client_registry::{event_sink, ClientCounts, ClientRegistry, CountClients};
use super::execution_monitor::TurnEnded;
use super::execution_monitor::{
    process, ExecutionMonitor, ExecutionReader, GetCounts, MonitorCounts, MonitorSeed, MonitorSettings, StopAccepting,
};
use super::session_keeper::SessionKeeper;
use crate::config::Config;
use crate::credentials::IssuedToken;
use crate::domain::{now, ApprovalStatus, ExecutionId, NewEvent, SessionStatus};
use crate::store::{approvals, catalog, executions, sessions, Store, StoreError, WriterStats};

/// Facts about this daemon process that never change while it runs.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub version: &'static str,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub data_dir: PathBuf,
    pub url: String,
}

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
    /// The read side of executions (read model + database).
    pub executions: ExecutionReader,
}

/// Begin a graceful stop; replies when every actor has settled and the store is flushed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;

/// The daemon's status, for `GET /api/v1/status`.
#[derive(Message, Debug)]
#[rtype(result = "Result<Status, MailboxError>")]
pub struct GetStatus;

/// `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub uptime_s: u64,
    pub data_dir: String,
    pub url: String,
    pub shutting_down: bool,
    /// Whether agents can be confined on this kernel.
    pub sandbox: SandboxStatus,
    pub counts: StatusCounts,
}

/// The kernel's sandbox support, for `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SandboxStatus {
    /// False when the kernel has no Landlock: executions then run unsandboxed and show
    /// `sandbox: "unavailable"`.
    pub available: bool,
    /// The kernel's Landlock ABI version.
    pub landlock_abi: Option<i32>,
}

impl SandboxStatus {
    pub fn current() -> Self {
        let abi = crate::sandbox::kernel_abi();
        SandboxStatus { available: abi.is_some(), landlock_abi: abi }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusCounts {
    #[serde(flatten)]
    pub catalog: MonitorCounts,
    pub pending_approvals: usize,
    pub clients: ClientCounts,
    /// Commits and writes of the store's writer: writes per commit show group commit.
    pub store: WriterStats,
}

/// The actor.
pub struct Supervisor {
    info: DaemonInfo,
    store: Store,
    catalog: Addr<Catalog>,
    monitor: Addr<ExecutionMonitor>,
    arbiter: Addr<ApprovalArbiter>,
    registry: Addr<ClientRegistry>,
    changes: Addr<ChangeTracker>,
    /// Set once shutdown began, so a second signal does not start it again.
    shutting_down: bool,
}

impl Supervisor {
    /// Recovers from the last run, loads what the actors start from, starts them (the
    /// Catalog, ClientRegistry, ChangeTracker, ApprovalArbiter, ExecutionMonitor and
    /// SessionKeeper) and then the Supervisor itself. Must run inside an actix system.
    pub async fn launch(
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
        store.set_event_sink(event_sink(registry.clone(), undelivered));
        // The monitor and the arbiter talk both ways: make the monitor's mailbox first,
        // so the arbiter can be given its address before the monitor runs.
        let (max_approval, pending) =
            store.read("load pending approvals", |c| Ok((approvals::max_id(c)?, approvals::pending(c)?))).await?;
        let monitor_context = Context::<ExecutionMonitor>::new();
        let monitor_addr = monitor_context.address();
        let git = Git::new(&config.home.git_dir());
        let changes =
            ChangeTracker::new(git, store.clone(), config.changes.clone(), monitor_addr.clone().recipient()).start();
        let listener =
            ExecutionListener { opened: monitor_addr.clone().recipient(), settled: monitor_addr.recipient() };
        let arbiter =
            ApprovalArbiter::new(store.clone(), listener, config.approval_timeout, max_approval, pending).start();
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
                        if let Some(execution) = executions::get(c, ExecutionId(id))? {
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
        let supervisor = Supervisor {
            info,
            store,
            catalog: catalog.clone(),
            monitor: monitor.clone(),
            arbiter: arbiter.clone(),
            registry: registry.clone(),
            changes: changes.clone(),
            shutting_down: false,
        }
        .start();
        Ok(Actors { supervisor, catalog, monitor, arbiter, registry, keeper, changes, executions })
    }
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

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(crate::memory::RELEASE_INTERVAL, |_, _| {
            tokio::task::spawn_blocking(crate::memory::release_freed);
        });
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        let first = !self.shutting_down;
        self.shutting_down = true;
        let (catalog, monitor) = (self.catalog.clone(), self.monitor.clone());
        let (changes, arbiter) = (self.changes.clone(), self.arbiter.clone());
        let store = self.store.clone();
        Box::pin(
            async move {
                if first {
                    tracing::info!("shutting down: no new work is accepted");
                    let stopping = NewEvent::new("daemon.stopping", serde_json::json!({}));
                    if let Err(e) =
                        store.record("record daemon stop", move |c, log| log.record(c, stopping).map(|_| ())).await
                    {
                        tracing::error!(error = %e, "recording daemon.stopping failed");
                    }
                }
                let _ = catalog.send(StopCataloguing).await;
                if let Err(e) = monitor.send(StopAccepting).await {
                    tracing::error!(error = %e, "execution monitor did not answer the shutdown");
                }
                let _ = changes.send(StopRecording).await;
                // After the monitor: the approvals its interrupted executions cancel are
                // stored before the flush; after this, no deadline writes anything.
                let _ = arbiter.send(StopSettling).await;
                if let Err(e) = store.flush().await {
                    tracing::error!(error = %e, "flushing the store at shutdown failed");
                }
                if let Err(e) = store.checkpoint().await {
                    tracing::warn!(error = %e, "checkpointing the database at shutdown failed");
                }
            }
            .into_actor(self),
        )
    }
}

impl Handler<GetStatus> for Supervisor {
    type Result = ResponseFuture<Result<Status, MailboxError>>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        let info = self.info.clone();
        let shutting_down = self.shutting_down;
        let store = self.store.writer_stats();
        let (monitor, arbiter, registry) = (self.monitor.clone(), self.arbiter.clone(), self.registry.clone());
        Box::pin(async move {
            let (catalog, pending, clients) =
                tokio::try_join!(monitor.send(GetCounts), arbiter.send(CountPending), registry.send(CountClients))?;
            let uptime = (Utc::now() - info.started_at).num_seconds().max(0) as u64;
            Ok(Status {
                version: info.version.to_owned(),
                pid: info.pid,
                started_at: info.started_at,
                uptime_s: uptime,
                data_dir: info.data_dir.display().to_string(),
                url: info.url,
                shutting_down,
                sandbox: SandboxStatus::current(),
                counts: StatusCounts { catalog, pending_approvals: pending, clients, store },
            })
        })
    }
}
