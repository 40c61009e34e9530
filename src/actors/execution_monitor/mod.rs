//! `ExecutionMonitor` owns what executions run on: the workspaces, profiles and providers
//! (the catalog, in [`catalog`]) and, as executions land, their queues and processes.
//! HTTP handlers and the Supervisor send it messages; it writes through the `Store`.

pub mod catalog;

use std::collections::BTreeMap;

use actix::prelude::*;

use crate::domain::{Origin, Profile, ProviderLimits, Workspace, WorkspaceId};
use crate::store::{Store, StoreError};

pub use catalog::*;

/// What can go wrong with a request to the ExecutionMonitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("no workspace {0:?}")]
    UnknownWorkspace(String),
    #[error("no profile {0:?}")]
    UnknownProfile(String),
    #[error("no provider {0:?}")]
    UnknownProvider(String),
    #[error("a workspace named {0:?} exists already")]
    DuplicateWorkspace(String),
    #[error("a profile named {0:?} exists already")]
    DuplicateProfile(String),
    #[error("profile {name:?} comes from the {origin} and cannot be changed over the API")]
    ReadOnlyProfile { name: String, origin: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("warden is shutting down and accepts no new work")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One provider: its limits and where they came from.
#[derive(Debug, Clone)]
struct ProviderState {
    limits: ProviderLimits,
    origin: Origin,
}

/// The actor. State is only touched by its own handlers.
pub struct ExecutionMonitor {
    store: Store,
    /// Every workspace by id; the database holds the same rows.
    workspaces: BTreeMap<WorkspaceId, Workspace>,
    /// Built-in, config-file and API profiles by name (API ones are also stored).
    profiles: BTreeMap<String, Profile>,
    /// Providers by name: config-file ones, those profiles name, and API-changed limits.
    providers: BTreeMap<String, ProviderState>,
    /// False once shutdown began: new work is refused.
    accepting: bool,
}

/// What the ExecutionMonitor starts from: the config's profiles and providers, and what
/// the database holds.
pub struct MonitorSeed {
    pub config_profiles: BTreeMap<String, Profile>,
    pub config_providers: BTreeMap<String, ProviderLimits>,
    pub workspaces: Vec<Workspace>,
    pub api_profiles: Vec<Profile>,
    pub api_providers: Vec<(String, ProviderLimits)>,
}

impl ExecutionMonitor {
    pub fn new(store: Store, seed: MonitorSeed) -> Self {
        let mut providers: BTreeMap<String, ProviderState> = seed
            .config_providers
            .into_iter()
            .map(|(name, limits)| (name, ProviderState { limits, origin: Origin::Config }))
            .collect();
        if let Some(local) = providers.get_mut("local") {
            local.origin = Origin::Builtin;
        }
        // Limits changed over the API win over the file: they were set later, on purpose.
        for (name, limits) in seed.api_providers {
            providers.insert(name, ProviderState { limits, origin: Origin::Api });
        }
        let mut profiles = seed.config_profiles;
        for profile in seed.api_profiles {
            // A config-file profile of the same name wins: the file is the user's word.
            if profiles.contains_key(&profile.name) {
                tracing::warn!(profile = %profile.name, "stored API profile is shadowed by the config file");
                continue;
            }
            profiles.insert(profile.name.clone(), profile);
        }
        for profile in profiles.values() {
            providers
                .entry(profile.spec.provider.clone())
                .or_insert(ProviderState { limits: ProviderLimits::default(), origin: Origin::Config });
        }
        ExecutionMonitor {
            store,
            workspaces: seed.workspaces.into_iter().map(|w| (w.id, w)).collect(),
            profiles,
            providers,
            accepting: true,
        }
    }
}

impl Actor for ExecutionMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Catalog changes are rare; a deep mailbox lets bursts of requests queue.
        ctx.set_mailbox_capacity(4096);
        tracing::debug!(
            workspaces = self.workspaces.len(),
            profiles = self.profiles.len(),
            providers = self.providers.len(),
            "execution monitor started"
        );
    }
}

/// Stop accepting new work (shutdown began). Replies once in-flight work is settled.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopAccepting;

impl Handler<StopAccepting> for ExecutionMonitor {
    type Result = ();

    fn handle(&mut self, _: StopAccepting, _: &mut Self::Context) {
        self.accepting = false;
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
}

impl Handler<GetCounts> for ExecutionMonitor {
    type Result = MessageResult<GetCounts>;

    fn handle(&mut self, _: GetCounts, _: &mut Self::Context) -> Self::Result {
        MessageResult(MonitorCounts {
            workspaces: self.workspaces.len(),
            profiles: self.profiles.len(),
            providers: self.providers.len(),
        })
    }
}
