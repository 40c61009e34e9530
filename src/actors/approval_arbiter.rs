//! `ApprovalArbiter` owns pending approvals. Decisions arrive one message at a time, so
//! the first decision for an approval wins and later ones are told who won. The
//! Supervisor starts it; HTTP handlers, WebSocket sessions and the ExecutionMonitor talk
//! to it. (The approvals themselves arrive with the approvals issue.)

use actix::prelude::*;

/// The actor.
pub struct ApprovalArbiter {
    /// Approvals waiting for a human.
    pending: usize,
}

impl ApprovalArbiter {
    pub fn new() -> Self {
        ApprovalArbiter { pending: 0 }
    }
}

impl Default for ApprovalArbiter {
    fn default() -> Self {
        Self::new()
    }
}

impl Actor for ApprovalArbiter {
    type Context = Context<Self>;
}

/// How many approvals wait for a decision.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CountPending;

impl Handler<CountPending> for ApprovalArbiter {
    type Result = usize;

    fn handle(&mut self, _: CountPending, _: &mut Self::Context) -> usize {
        self.pending
    }
}
