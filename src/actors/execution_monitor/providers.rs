//! Providers: each one's FIFO queue and limits, the ExecutionMonitor's messages about
//! them, and the loop that starts whatever a queue allows. A provider exists when the
//! config file names it, a profile names it or its limits were set over the API.

use std::time::Instant;

use actix::prelude::*;

use super::budgets::DaySpend;
use super::lifecycle::{Command, Phase};
use super::queue::{NextStart, ProviderQueue};
use super::{ExecutionMonitor, MonitorError};
use crate::domain::{validate_name, NewEvent, Origin, Provider, ProviderLimits, Spend};
use crate::store::catalog as rows;

/// One provider: where it was defined, its queue and limits.
#[derive(Debug)]
pub(super) struct ProviderState {
    pub(super) origin: Origin,
    pub(super) queue: ProviderQueue,
    /// A pending wake-up for the head of the queue waiting on a start token.
    wake: Option<SpawnHandle>,
    /// What its agents spent this UTC day, against its daily budgets.
    pub(super) spend: DaySpend,
}

impl ProviderState {
    pub(super) fn new(limits: ProviderLimits, origin: Origin) -> Self {
        ProviderState {
            origin,
            queue: ProviderQueue::new(limits, Instant::now()),
            wake: None,
            spend: DaySpend::today(Spend::default()),
        }
    }
}

/// Every provider with its limits and live usage.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Provider>")]
pub struct ListProviders;

/// One provider with its limits and live usage.
#[derive(Message, Debug)]
#[rtype(result = "Result<Provider, MonitorError>")]
pub struct GetProvider {
    pub name: String,
}

/// Set a provider's limits (creating the provider if it is new); applies at once.
#[derive(Message, Debug)]
#[rtype(result = "Result<Provider, MonitorError>")]
pub struct SetProviderLimits {
    pub name: String,
    pub limits: ProviderLimits,
}

impl Handler<ListProviders> for ExecutionMonitor {
    type Result = MessageResult<ListProviders>;

    fn handle(&mut self, _: ListProviders, _: &mut Self::Context) -> Self::Result {
        self.add_catalog_providers();
        MessageResult(self.providers.keys().map(|name| self.provider_view(name)).collect())
    }
}

impl Handler<GetProvider> for ExecutionMonitor {
    type Result = Result<Provider, MonitorError>;

    fn handle(&mut self, msg: GetProvider, _: &mut Self::Context) -> Self::Result {
        self.add_catalog_providers();
        match self.providers.contains_key(&msg.name) {
            true => Ok(self.provider_view(&msg.name)),
            false => Err(MonitorError::UnknownProvider(msg.name)),
        }
    }
}

impl Handler<SetProviderLimits> for ExecutionMonitor {
    type Result = AtomicResponse<Self, Result<Provider, MonitorError>>;

    fn handle(&mut self, msg: SetProviderLimits, _: &mut Self::Context) -> Self::Result {
        let SetProviderLimits { name, limits } = msg;
        let checked = validate_name("provider", &name).and_then(|()| limits.validate()).map_err(MonitorError::Invalid);
        let store = self.store.clone();
        let write = async move {
            checked?;
            let stored = name.clone();
            store
                .record("set provider limits", move |c, log| {
                    rows::upsert_provider(c, &stored, limits, crate::domain::now())?;
                    let mut data = serde_json::to_value(limits).unwrap_or_default();
                    data["name"] = serde_json::json!(stored);
                    log.record(c, NewEvent::new("provider.changed", data)).map(|_| ())
                })
                .await?;
            Ok((name, limits))
        };
        // Atomic: a second change waits for this one's commit, so the queue and the
        // database never disagree about the limits.
        AtomicResponse::new(Box::pin(write.into_actor(self).map(|stored: Result<_, MonitorError>, act, ctx| {
            let (name, limits) = stored?;
            tracing::info!(provider = %name, max_concurrent = limits.max_concurrent, rate_per_minute = limits.rate_per_minute, "provider limits set");
            let state = act.provider_mut(&name);
            state.origin = Origin::Api;
            state.queue.set_limits(limits, Instant::now());
            // Changed limits apply to the queue at once.
            act.try_start(&name, ctx);
            Ok(act.provider_view(&name))
        })))
    }
}

impl ExecutionMonitor {
    /// A provider a profile names for the first time gets the default limits.
    pub(super) fn add_catalog_providers(&mut self) {
        let catalog = self.catalog.read();
        for profile in catalog.profiles.values() {
            if !self.providers.contains_key(&profile.spec.provider) {
                let origin = if profile.origin == Origin::Api { Origin::Api } else { Origin::Config };
                self.providers
                    .insert(profile.spec.provider.clone(), ProviderState::new(ProviderLimits::default(), origin));
            }
        }
    }

    pub(super) fn provider_view(&self, name: &str) -> Provider {
        let state = &self.providers[name];
        Provider {
            name: name.to_owned(),
            limits: state.queue.limits(),
            origin: state.origin,
            running: state.queue.running(),
            queued: state.queue.queued(),
            pending_approval: self
                .runs
                .values()
                .filter(|run| matches!(run.phase, Phase::AwaitingApproval) && run.execution.provider == name)
                .count() as u32,
            spend_today: state.spend.spent,
            budget_reached: state.queue.limits().budget_reached(&state.spend.spent),
        }
    }

    pub(super) fn provider_mut(&mut self, name: &str) -> &mut ProviderState {
        // A provider can vanish from the config between runs; its executions still run.
        self.providers
            .entry(name.to_owned())
            .or_insert_with(|| ProviderState::new(ProviderLimits::default(), Origin::Config))
    }

    /// Starts whatever the provider's queue allows now; schedules a wake-up when the head
    /// waits for a start token. Called after every change that could let one start.
    pub(super) fn try_start(&mut self, provider: &str, ctx: &mut Context<Self>) {
        if !self.accepting {
            return;
        }
        if self.held_by_budget(provider) {
            return;
        }
        let mut started = false;
        loop {
            let Some(state) = self.providers.get_mut(provider) else { return };
            match state.queue.next_start(Instant::now()) {
                NextStart::Start(id) => {
                    started = true;
                    if let Err(e) = self.command(id, Command::SlotGranted, ctx) {
                        tracing::error!(execution = %id, error = %e, "a queued execution could not start");
                    }
                }
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
        // Those still waiting moved up.
        if started {
            self.refresh_positions(provider);
        }
    }
}
