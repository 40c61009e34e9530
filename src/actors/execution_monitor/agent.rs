//! What the capture threads tell the monitor about an agent's activity once it is
//! stored: the execution's new summary (shown with the run from then on).

use actix::prelude::*;

use super::ExecutionMonitor;
use crate::domain::{AgentSummary, ExecutionId, Usage};

/// An agent execution's activity was stored: its summary now, and what the stored
/// batch spent on its provider's UTC day.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct AgentProgress {
    pub id: ExecutionId,
    pub summary: Option<AgentSummary>,
    pub provider: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub spent: Usage,
}

impl Handler<AgentProgress> for ExecutionMonitor {
    type Result = ();

    fn handle(&mut self, msg: AgentProgress, ctx: &mut Self::Context) {
        if let (Some(summary), Some(run)) = (msg.summary, self.runs.get_mut(&msg.id)) {
            run.execution.agent = Some(Box::new(summary));
            self.publish(msg.id);
        }
        self.add_spend(&msg.provider, &msg.day, &msg.spent, ctx);
    }
}
