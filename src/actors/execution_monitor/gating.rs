//! Gated executions and the approvals of running agents: the ExecutionMonitor's side of
//! the ApprovalArbiter. A gated execution asks for an approval when it is created;
//! approved, it joins the back of its queue; denied, expired or cancelled, it ends
//! `denied`. An approval a running agent waits on shows as `waiting_approval_id`.

use actix::prelude::*;

use super::lifecycle::{Command, Phase};
use super::ExecutionMonitor;
use crate::actors::approval_arbiter::{ApprovalOpened, ApprovalSettled};
use crate::domain::{Approval, ApprovalKind, ApprovalStatus, Decision, Execution, NewApproval};

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
        execution_id: Some(execution.id),
        session_id: execution.session_id,
        source: Some("warden".into()),
    }
}

impl Handler<ApprovalOpened> for ExecutionMonitor {
    type Result = ();

    /// An agent inside a running execution waits on a human.
    fn handle(&mut self, msg: ApprovalOpened, ctx: &mut Self::Context) {
        let Some(id) = msg.approval.execution_id else { return };
        // Not running (any more): nothing shows it waiting.
        let _ = self.command(id, Command::AgentWaits(msg.approval.id), ctx);
    }
}

impl Handler<ApprovalSettled> for ExecutionMonitor {
    type Result = ();

    /// A gated execution is approved (it joins the back of its queue) or denied (final);
    /// a running one stops waiting. Only the execution's own gate approval releases it:
    /// any other approval that names it (an agent's, the owner's) never does.
    fn handle(&mut self, msg: ApprovalSettled, ctx: &mut Self::Context) {
        let approval = msg.approval;
        let Some(id) = approval.execution_id else { return };
        let Some(run) = self.runs.get(&id) else { return };
        // Its gate's id is recorded once the gate is stored; until then only a gate
        // approval naming it can be the one.
        let own_gate = approval.kind == ApprovalKind::Gate
            && matches!(run.phase, Phase::AwaitingApproval)
            && run.execution.approval_id.is_none_or(|gate| gate == approval.id);
        let command = match approval.outcome() {
            _ if !own_gate => Command::AgentAnswered(approval.id),
            Some(Decision::Approve) => Command::GateApproved(approval.id),
            _ => Command::GateRefused(why_refused(&approval)),
        };
        if let Err(e) = self.command(id, command, ctx) {
            tracing::error!(execution = %id, error = %e, "an approval's answer did not apply");
        }
    }
}

/// Why a gate ended without approval, in words.
fn why_refused(approval: &Approval) -> String {
    let by = approval.decided_by.clone().unwrap_or_else(|| "?".into());
    match approval.status {
        ApprovalStatus::Expired => "the approval expired (default: deny)".to_owned(),
        ApprovalStatus::Cancelled => {
            format!("the approval was cancelled: {}", approval.reason.clone().unwrap_or_default())
        }
        _ => match &approval.reason {
            Some(reason) => format!("denied by {by}: {reason}"),
            None => format!("denied by {by}"),
        },
    }
}
