//! Daily budgets: what each provider's agents spent this UTC day (from the agent usage
//! the capture threads stored, and from the database at start), and the hold on new
//! starts once a provider's budget is reached. The hold lifts when the day turns (a
//! timer at UTC midnight) or when the owner raises the limit (`SetProviderLimits`,
//! which tries the queue again). Queued executions held show `waiting_for: "budget"`.

use std::time::Duration;

use actix::prelude::*;
use chrono::{Days, Utc};

use super::ExecutionMonitor;
use crate::domain::{NewEvent, Spend, Usage, WaitingFor};

/// Today, UTC, as `YYYY-MM-DD` (how spend is kept by day).
pub fn utc_day() -> String {
    Utc::now().format("%Y-%m-%d").to_string()
}

/// One provider's spend this UTC day.
#[derive(Debug, Clone, Default)]
pub(super) struct DaySpend {
    /// `YYYY-MM-DD`.
    pub(super) day: String,
    pub(super) spent: Spend,
    /// `provider.budget_reached` was sent for this day (and these limits).
    pub(super) announced: bool,
}

impl DaySpend {
    pub(super) fn today(spent: Spend) -> Self {
        DaySpend { day: utc_day(), spent, announced: false }
    }

    /// Adds what was spent on `day`; a later day starts afresh, an earlier one (a
    /// batch stored just before midnight) no longer counts.
    fn add(&mut self, day: &str, usage: &Usage) {
        if day > self.day.as_str() {
            *self = DaySpend { day: day.to_owned(), ..DaySpend::default() };
        }
        if day == self.day {
            let tokens = usage.tokens();
            self.spent.cost_usd += usage.cost_usd.unwrap_or(0.0);
            self.spent.input_tokens = self.spent.input_tokens.saturating_add(tokens.all_input());
            self.spent.output_tokens = self.spent.output_tokens.saturating_add(tokens.output);
        }
    }

    fn turn_to(&mut self, day: &str) {
        if day > self.day.as_str() {
            *self = DaySpend { day: day.to_owned(), ..DaySpend::default() };
        }
    }
}

impl ExecutionMonitor {
    /// Counts an agent's stored usage for its provider; a budget it reaches holds the
    /// provider's next starts.
    pub(super) fn add_spend(&mut self, provider: &str, day: &str, usage: &Usage, ctx: &mut Context<Self>) {
        if usage.is_zero() {
            return;
        }
        self.provider_mut(provider).spend.add(day, usage);
        self.try_start(provider, ctx);
    }

    /// Whether the provider's budget holds its next starts now; says so once a day
    /// (`provider.budget_reached`), and marks or clears `waiting_for` on its queue.
    pub(super) fn held_by_budget(&mut self, provider: &str) -> bool {
        let Some(state) = self.providers.get_mut(provider) else { return false };
        let limits = state.queue.limits();
        let held = limits.budget_reached(&state.spend.spent);
        if held && !state.spend.announced {
            state.spend.announced = true;
            let spent = state.spend.spent;
            tracing::info!(provider, cost_usd = spent.cost_usd, "daily budget reached: new starts wait");
            let data = serde_json::json!({
                "name": provider,
                "day": state.spend.day,
                "spend_today": spent,
                "max_cost_usd_per_day": limits.max_cost_usd_per_day,
                "max_tokens_per_day": limits.max_tokens_per_day,
            });
            self.store.record_detached("budget reached", move |c, log| {
                log.record(c, NewEvent::new("provider.budget_reached", data)).map(|_| ())
            });
        }
        if !held {
            state.spend.announced = false;
        }
        let waiting = held.then_some(WaitingFor::Budget);
        let queued: Vec<_> = state.queue.order().collect();
        for id in queued {
            if let Some(run) = self.runs.get_mut(&id).filter(|run| run.execution.waiting_for != waiting) {
                run.execution.waiting_for = waiting;
                self.publish(id);
            }
        }
        held
    }

    /// At each UTC midnight every provider's day starts afresh, and whatever a budget
    /// held may start.
    pub(super) fn turn_the_day_at_midnight(&mut self, ctx: &mut Context<Self>) {
        let now = Utc::now();
        let midnight = now
            .date_naive()
            .checked_add_days(Days::new(1))
            .and_then(|day| day.and_hms_opt(0, 0, 1))
            .map(|t| t.and_utc());
        let wait = midnight.and_then(|t| (t - now).to_std().ok()).unwrap_or(Duration::from_secs(3600));
        ctx.run_later(wait, |act, ctx| {
            let today = utc_day();
            let names: Vec<String> = act.providers.keys().cloned().collect();
            for name in &names {
                act.provider_mut(name).spend.turn_to(&today);
            }
            for name in names {
                act.try_start(&name, ctx);
            }
            act.turn_the_day_at_midnight(ctx);
        });
    }
}
