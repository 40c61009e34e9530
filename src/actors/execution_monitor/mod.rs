//! `ExecutionMonitor` owns the executions that are not final: one [`Run`] each, in the
//! phase its [`lifecycle`] gives it, and one FIFO queue per provider with its limits
//! ([`queue`], [`providers`]). HTTP handlers, the SessionKeeper and the Supervisor send
//! it messages ([`executions`]); the ApprovalArbiter tells it about approvals
//! ([`gating`]). It carries out what each transition asks ([`effects`]): signals, rows
//! written through the `Store`, processes spawned ([`process`]). After each change it
//! publishes the run to the [`LiveExecutions`] read model, which nothing else writes.
//! Workspaces and profiles are the Catalog's; the monitor reads them from its view.

mod agent;
mod budgets;
mod effects;
pub mod executions;
mod gating;
pub mod lifecycle;
pub mod process;
pub mod providers;
pub mod queue;
pub mod view;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use tokio::sync::oneshot;

use super::approval_arbiter::ApprovalArbiter;
use super::catalog::{CatalogError, CatalogView};
use super::change_tracker::ChangeTracker;
use crate::credentials::{AgentTokens, IssuedToken};
use crate::domain::{Execution, ExecutionId, ExecutionStatus, Origin, ProviderLimits};
use crate::sandbox::Sandboxer;
use crate::store::executions::QueuedExecution;
use crate::store::{Store, StoreError};
use lifecycle::Run;
use providers::ProviderState;

pub use agent::AgentProgress;
pub use budgets::utc_day;
pub use executions::*;
pub use providers::*;
pub use view::ExecutionReader;

/// Executions the monitor is working on (not final, or final but not yet committed),
/// readable without asking the actor. Everything else is in the database.
pub type LiveExecutions = Arc<DashMap<ExecutionId, Execution>>;

/// What can go wrong with a request to the ExecutionMonitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The catalog refused the request's profile, workspace or cwd.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no provider {0:?}")]
    UnknownProvider(String),
    #[error("no execution {0}")]
    UnknownExecution(ExecutionId),
    #[error("cannot {action} execution {} while it is {}", .execution.id, .execution.status)]
    InvalidTransition { action: &'static str, execution: Box<Execution> },
    #[error("{0}")]
    Invalid(String),
    #[error("warden is shutting down and accepts no new work")]
    ShuttingDown,
    /// Another actor did not answer (it stopped): the daemon's trouble, not the request's.
    #[error("the {actor} did not answer: {source}")]
    Unanswered { actor: &'static str, source: actix::MailboxError },
    /// Asking for a gated execution's approval failed (its storage, a stop).
    #[error("asking for the approval failed: {0}")]
    Approval(Box<crate::actors::approval_arbiter::ArbiterError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settings the monitor runs with.
#[derive(Clone)]
pub struct MonitorSettings {
    /// Given to every agent process as `WARDEN_URL`.
    pub url: String,
    /// Where each execution's agent token is issued (given to its processes as
    /// `WARDEN_TOKEN`) and revoked; the HTTP guard reads the same.
    pub agent_tokens: AgentTokens,
    /// Confines agents away from the data dir.
    pub sandboxer: Sandboxer,
    /// How long a cancelled or timed-out process group gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How long running executions get at shutdown between SIGTERM and SIGKILL.
    pub shutdown_grace: Duration,
}

impl std::fmt::Debug for MonitorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorSettings")
            .field("url", &self.url)
            .field("agent_tokens", &self.agent_tokens.len())
            .field("protected", &self.sandboxer.protected())
            .finish_non_exhaustive()
    }
}

/// The actor. Its fields are touched only by its handlers and the futures they spawn into
/// its context; the read model (`live`) is shared for reading and written only by
/// `publish` and `refresh_positions`.
pub struct ExecutionMonitor {
    store: Store,
    settings: MonitorSettings,
    /// Asked for approvals of gated executions; told when executions end.
    arbiter: Addr<ApprovalArbiter>,
    /// Told when a session's turn has ended (the SessionKeeper).
    turn_listener: Option<Recipient<TurnEnded>>,
    /// Takes the work tree snapshots at each start and end.
    changes: Addr<ChangeTracker>,
    /// The workspaces and profiles requests name (the Catalog's).
    catalog: CatalogView,
    /// Providers by name: config-file ones, those profiles name, and API-changed limits.
    providers: BTreeMap<String, ProviderState>,
    /// Every execution not yet final, in its phase.
    runs: HashMap<ExecutionId, Run>,
    /// Final executions whose final row could not be stored: shown as they ended, so
    /// what clients see stays true.
    unsaved: HashMap<ExecutionId, Execution>,
    /// The read model handlers read from: a projection of `runs` and `unsaved`.
    live: LiveExecutions,
    /// The next execution id and queue order (ids are ours to assign).
    next_id: i64,
    next_queue_order: i64,
    /// False once shutdown began: new work is refused and nothing more starts.
    accepting: bool,
    /// Shutdown callers waiting until no process is left.
    drained: Vec<oneshot::Sender<()>>,
    /// Where processes are spawned and their output captured.
    capture: process::CapturePool,
}

/// What the ExecutionMonitor starts from: the config's providers and what the database
/// holds.
pub struct MonitorSeed {
    pub config_providers: BTreeMap<String, ProviderLimits>,
    pub api_providers: Vec<(String, ProviderLimits)>,
    /// Executions still queued at the last stop, in their order, with request env and
    /// the agent token whose hash was stored for each at this start.
    pub queued: Vec<(QueuedExecution, IssuedToken)>,
    /// The largest execution id and queue order used so far.
    pub high_water: (i64, i64),
    /// What each provider's agents spent this UTC day so far.
    pub spend_today: Vec<(String, crate::domain::Spend)>,
}

impl ExecutionMonitor {
    pub fn new(
        store: Store,
        settings: MonitorSettings,
        arbiter: Addr<ApprovalArbiter>,
        turn_listener: Option<Recipient<TurnEnded>>,
        changes: Addr<ChangeTracker>,
        catalog: CatalogView,
        seed: MonitorSeed,
    ) -> Self {
        let mut providers: BTreeMap<String, ProviderState> = seed
            .config_providers
            .into_iter()
            .map(|(name, limits)| (name, ProviderState::new(limits, Origin::Config)))
            .collect();
        if let Some(local) = providers.get_mut("local") {
            local.origin = Origin::Builtin;
        }
        // Limits changed over the API win over the file: they were set later, on purpose.
        for (name, limits) in seed.api_providers {
            providers.insert(name, ProviderState::new(limits, Origin::Api));
        }
        for (name, spent) in seed.spend_today {
            providers
                .entry(name)
                .or_insert_with(|| ProviderState::new(ProviderLimits::default(), Origin::Config))
                .spend = budgets::DaySpend::today(spent);
        }
        let mut monitor = ExecutionMonitor {
            store,
            settings,
            arbiter,
            turn_listener,
            changes,
            catalog,
            providers,
            runs: HashMap::new(),
            unsaved: HashMap::new(),
            live: Arc::new(DashMap::new()),
            next_id: seed.high_water.0 + 1,
            next_queue_order: seed.high_water.1 + 1,
            accepting: true,
            drained: Vec::new(),
            capture: process::CapturePool::start(),
        };
        monitor.add_catalog_providers();
        for (queued, token) in seed.queued {
            monitor.requeue_recovered(queued.execution, queued.env, token);
        }
        monitor
    }

    /// The read model, for the HTTP layer.
    pub fn live(&self) -> LiveExecutions {
        self.live.clone()
    }

    /// Keeps `queue_position` exact for every waiting run of a provider, in the runs and
    /// in the read model (in place: a queue of thousands moves up at every start).
    fn refresh_positions(&mut self, provider: &str) {
        let Some(state) = self.providers.get(provider) else { return };
        for (position, id) in state.queue.order().enumerate() {
            let position = Some(position as u32);
            if let Some(run) = self.runs.get_mut(&id).filter(|run| run.execution.queue_position != position) {
                run.execution.queue_position = position;
                if let Some(mut shown) = self.live.get_mut(&id) {
                    shown.queue_position = position;
                }
            }
        }
    }

    /// The projection: shows a run (or an unsaved final execution) as it is now, or
    /// nothing once it is final and stored. With `refresh_positions`, the only writer of
    /// the read model.
    fn publish(&self, id: ExecutionId) {
        match self.runs.get(&id).map(|run| &run.execution).or_else(|| self.unsaved.get(&id)) {
            Some(execution) => {
                self.live.insert(id, execution.clone());
            }
            None => {
                self.live.remove(&id);
            }
        }
    }
}

impl Actor for ExecutionMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bursts of HTTP requests queue here rather than wait on a full mailbox.
        ctx.set_mailbox_capacity(65_536);
        tracing::debug!(providers = self.providers.len(), queued = self.runs.len(), "execution monitor started");
        // Executions recovered from the last run start in their original order.
        let names: Vec<String> = self.providers.keys().cloned().collect();
        for provider in names {
            self.try_start(&provider, ctx);
        }
        self.turn_the_day_at_midnight(ctx);
    }
}

/// Shutdown began: refuse new work, start nothing more, give running process groups
/// SIGTERM and the shutdown grace, then SIGKILL. Replies when no process is left.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopAccepting;

impl Handler<StopAccepting> for ExecutionMonitor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopAccepting, ctx: &mut Self::Context) -> Self::Result {
        self.accepting = false;
        self.interrupt_all(ctx);
        let (done, drained) = oneshot::channel();
        self.drained.push(done);
        self.notify_if_drained();
        Box::pin(async move {
            let _ = drained.await;
        })
    }
}

/// Counts for `/api/v1/status`.
#[derive(Message, Debug)]
#[rtype(result = "MonitorCounts")]
pub struct GetCounts;

#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct MonitorCounts {
    pub workspaces: usize,
    pub profiles: usize,
    pub providers: usize,
    pub executions_queued: usize,
    pub executions_running: usize,
}

impl Handler<GetCounts> for ExecutionMonitor {
    type Result = MessageResult<GetCounts>;

    fn handle(&mut self, _: GetCounts, _: &mut Self::Context) -> Self::Result {
        self.add_catalog_providers();
        let count =
            |wanted: &[ExecutionStatus]| self.runs.values().filter(|r| wanted.contains(&r.execution.status)).count();
        let catalog = self.catalog.read();
        MessageResult(MonitorCounts {
            workspaces: catalog.workspaces.len(),
            profiles: catalog.profiles.len(),
            providers: self.providers.len(),
            executions_queued: count(&[ExecutionStatus::Queued]),
            executions_running: count(&[ExecutionStatus::Running, ExecutionStatus::Paused]),
        })
    }
}
