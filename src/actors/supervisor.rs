//! `Supervisor` answers for the daemon as a whole (`/api/v1/status`) and owns shutdown:
//! stop accepting work, settle what runs, flush the store. `daemon::launch` starts it
//! after the others.

use std::path::PathBuf;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::approval_arbiter::{ApprovalArbiter, CountPending, StopSettling};
use super::catalog::{Catalog, StopCataloguing};
use super::change_tracker::{ChangeTracker, StopRecording};
use super::client_registry::{ClientCounts, ClientRegistry, CountClients};
use super::execution_monitor::{ExecutionMonitor, GetCounts, MonitorCounts, StopAccepting};
use crate::domain::NewEvent;
use crate::store::{Store, WriterStats};

/// Facts about this daemon process that never change while it runs.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    pub version: &'static str,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub data_dir: PathBuf,
    pub url: String,
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

/// The actors the Supervisor asks for the status and stops, in order, at shutdown.
pub struct Supervised {
    pub catalog: Addr<Catalog>,
    pub monitor: Addr<ExecutionMonitor>,
    pub arbiter: Addr<ApprovalArbiter>,
    pub registry: Addr<ClientRegistry>,
    pub changes: Addr<ChangeTracker>,
}

impl Supervisor {
    pub fn new(info: DaemonInfo, store: Store, supervised: Supervised) -> Self {
        let Supervised { catalog, monitor, arbiter, registry, changes } = supervised;
        Supervisor { info, store, catalog, monitor, arbiter, registry, changes, shutting_down: false }
    }
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
