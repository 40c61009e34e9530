//! `Supervisor` starts the other actors in order (the store is open and migrated before
//! it runs), answers for the daemon as a whole (`/api/v1/status`) and owns shutdown:
//! stop accepting work, settle what runs, flush the store. `daemon.rs` launches it.

use std::path::PathBuf;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::approval_arbiter::{ApprovalArbiter, CountPending};
use super::execution_monitor::{ExecutionMonitor, GetCounts, MonitorCounts, MonitorSeed, StopAccepting};
use super::session_registry::{ClientCounts, CountClients, SessionRegistry};
use crate::config::Config;
use crate::store::{catalog, Store, StoreError};

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
    pub monitor: Addr<ExecutionMonitor>,
    pub arbiter: Addr<ApprovalArbiter>,
    pub registry: Addr<SessionRegistry>,
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
    pub counts: StatusCounts,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusCounts {
    #[serde(flatten)]
    pub catalog: MonitorCounts,
    pub pending_approvals: usize,
    pub clients: ClientCounts,
}

/// The actor.
pub struct Supervisor {
    info: DaemonInfo,
    store: Store,
    monitor: Addr<ExecutionMonitor>,
    arbiter: Addr<ApprovalArbiter>,
    registry: Addr<SessionRegistry>,
    /// Set once shutdown began, so a second signal does not start it again.
    shutting_down: bool,
}

impl Supervisor {
    /// Loads what the actors start from, starts them (registry, monitor, arbiter) and
    /// then the Supervisor itself. Must run inside an actix system.
    pub fn launch(config: &Config, store: Store, info: DaemonInfo) -> Result<Actors, StoreError> {
        let seed = store.read_blocking("load catalog", |conn| {
            Ok(MonitorSeed {
                config_profiles: config.profiles.clone(),
                config_providers: config.providers.clone(),
                workspaces: catalog::all_workspaces(conn)?,
                api_profiles: catalog::all_profiles(conn)?,
                api_providers: catalog::all_providers(conn)?,
            })
        })?;
        let registry = SessionRegistry::new(config.max_clients).start();
        let monitor = ExecutionMonitor::new(store.clone(), seed).start();
        let arbiter = ApprovalArbiter::new().start();
        let supervisor = Supervisor {
            info,
            store,
            monitor: monitor.clone(),
            arbiter: arbiter.clone(),
            registry: registry.clone(),
            shutting_down: false,
        }
        .start();
        Ok(Actors { supervisor, monitor, arbiter, registry })
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        let first = !self.shutting_down;
        self.shutting_down = true;
        let monitor = self.monitor.clone();
        let store = self.store.clone();
        Box::pin(
            async move {
                if first {
                    tracing::info!("shutting down: no new work is accepted");
                }
                if let Err(e) = monitor.send(StopAccepting).await {
                    tracing::error!(error = %e, "execution monitor did not answer the shutdown");
                }
                if let Err(e) = store.flush().await {
                    tracing::error!(error = %e, "flushing the store at shutdown failed");
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
                counts: StatusCounts { catalog, pending_approvals: pending, clients },
            })
        })
    }
}
