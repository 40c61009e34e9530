//! Gated executions and the approvals of running agents: the ExecutionMonitor's side of
//! the ApprovalArbiter. A gated execution asks for an approval when it is created;
//! approved, it joins the back of its queue; denied, expired or cancelled, it ends
//! `denied`. An approval a running agent waits on shows as `waiting_approval_id`.

use actix::prelude::*;

use super::executions::execution_event;
use super::ExecutionMonitor;
use crate::actors::approval_arbiter::{ApprovalOpened, ApprovalSettled};
use crate::domain::{ApprovalKind, ApprovalStatus, Decision, Execution, ExecutionId, ExecutionStatus, NewApproval};
use crate::store::executions as rows;

/// The approval a gated execution asks for: titled after its profile and prompt.
pub(super) fn approval_request(execution: &Execution) -> NewApproval {
    let prompt: String = execution.prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    let excerpt: String = if prompt.chars().count() > 80 {
        format!("{}…", prompt.chars().take(79).collect::<String>())
    } else {
        prompt
    };
    NewApproval {
        title: format!("Run {}: {excerpt}", execution.profile),
        details: serde_json::json!({
            "argv": execution.argv,
            "cwd": execution.cwd,
            "workspace": execution.workspace,
            "profile": execution.profile,
        }),
        timeout_s: None,
        default: None,
        execution_id: Some(execution.id.0),
        session_id: execution.session_id,
        source: Some("warden".into()),
    }
}

fn shown_provider(live: &super::LiveExecutions, id: ExecutionId) -> String {
    live.get(&id).map(|e| e.provider.clone()).unwrap_or_default()
}

impl Handler<ApprovalOpened> for ExecutionMonitor {
    type Result = ();

    /// An agent inside a running execution waits on a human.
    fn handle(&mut self, msg: ApprovalOpened, _: &mut Self::Context) {
        let Some(id) = msg.approval.execution_id.map(ExecutionId) else { return };
        if let Some(mut shown) = self.live.get_mut(&id) {
            if matches!(shown.status, ExecutionStatus::Running | ExecutionStatus::Paused) {
                shown.waiting_approval_id = Some(msg.approval.id);
            }
        }
    }
}

impl Handler<ApprovalSettled> for ExecutionMonitor {
    type Result = ();

    /// A gated execution is approved (it joins the back of its queue) or denied (final);
    /// a running one stops waiting. Only the execution's own gate approval releases it:
    /// any other approval that names it (an agent's, the owner's) never does.
    fn handle(&mut self, msg: ApprovalSettled, ctx: &mut Self::Context) {
        let approval = msg.approval;
        let Some(id) = approval.execution_id.map(ExecutionId) else { return };
        let Some((status, gate)) =
            self.live.get(&id).filter(|_| self.tracked.contains_key(&id)).map(|e| (e.status, e.approval_id))
        else {
            return;
        };
        // Its gate's id is recorded once the gate is stored; until then only a gate
        // approval naming it can be the one.
        let own_gate = approval.kind == ApprovalKind::Gate && gate.is_none_or(|gate| gate == approval.id);
        if status != ExecutionStatus::PendingApproval || !own_gate {
            if let Some(mut shown) = self.live.get_mut(&id) {
                if shown.waiting_approval_id == Some(approval.id) {
                    shown.waiting_approval_id = None;
                }
            }
            return;
        }
        match approval.outcome() {
            Some(Decision::Approve) => {
                let Some(shown) = self.live.get_mut(&id).map(|mut shown| {
                    shown.status = ExecutionStatus::Queued;
                    shown.approval_id = Some(approval.id);
                    shown.clone()
                }) else {
                    return;
                };
                self.store.record_detached("queue approved execution", move |c, log| {
                    rows::set_status(c, id, ExecutionStatus::Queued)?;
                    log.record(c, execution_event("execution.queued", &shown))?;
                    Ok(())
                });
                // At the back of the FIFO as of the approval.
                let provider = shown_provider(&self.live, id);
                self.provider_mut(&provider).queue.push(id, true);
                self.try_start(&provider, ctx);
            }
            _ => {
                let by = approval.decided_by.clone().unwrap_or_else(|| "?".into());
                let why = match approval.status {
                    ApprovalStatus::Expired => "the approval expired (default: deny)".to_owned(),
                    ApprovalStatus::Cancelled => {
                        format!("the approval was cancelled: {}", approval.reason.clone().unwrap_or_default())
                    }
                    _ => match &approval.reason {
                        Some(reason) => format!("denied by {by}: {reason}"),
                        None => format!("denied by {by}"),
                    },
                };
                self.finish(id, ExecutionStatus::Denied, None, Some(why), false);
            }
        }
    }
}
