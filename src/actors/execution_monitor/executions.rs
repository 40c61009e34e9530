//! The ExecutionMonitor's execution messages: enqueue (FIFO per provider), retry,
//! cancel, pause, resume, and the end of each process. Each turns into a lifecycle
//! [`Command`] for the run it names; what the transition asks is carried out in
//! `effects`.

use std::collections::BTreeMap;
use std::path::Path;

use actix::prelude::*;

use super::lifecycle::{Command, Phase, Run};
use super::process::ProcessExit;
use super::{gating, ExecutionMonitor, MonitorError};
use crate::actors::approval_arbiter::Request;
use crate::actors::catalog::Target;
use crate::actors::change_tracker::ChangesRecorded;
use crate::credentials::IssuedToken;
use crate::domain::{
    fill_template, now, uses_placeholder, validate_env, AgentSummary, ApprovalId, ApprovalKind, ApprovalPolicy,
    Execution, ExecutionId, ExecutionStatus, Isolation, NewEvent, NewExecution, SessionTurn, TemplateValues,
};
use crate::store::executions as rows;
use crate::store::idempotency::Claim;

pub(super) type Reply = ResponseActFuture<ExecutionMonitor, Result<Execution, MonitorError>>;

/// Queue an execution; replies once it is stored and in its provider's FIFO queue.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Enqueue {
    pub request: NewExecution,
    /// Set when the execution is a turn of a session.
    pub turn: Option<SessionTurn>,
    /// The request's `Idempotency-Key`: remembered with the execution's row.
    pub claim: Option<Claim>,
}

/// Told to the SessionKeeper when a turn's execution is final and stored.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct TurnEnded {
    pub execution: Execution,
}

/// Run a finished execution's request again as a new execution at the back of the queue.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Retry {
    pub id: ExecutionId,
    /// The original request, as stored.
    pub request: NewExecution,
    /// The request's `Idempotency-Key`: remembered with the new execution's row.
    pub claim: Option<Claim>,
}

/// Cancel: a queued execution leaves its queue; a running one's process group gets
/// SIGTERM, then SIGKILL after the kill grace. Replies with the execution as it is now.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Cancel {
    pub id: ExecutionId,
}

/// SIGSTOP the process group; the execution keeps its slot and its timeout clock stops.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Pause {
    pub id: ExecutionId,
}

/// SIGCONT the process group of a paused execution.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, MonitorError>")]
pub struct Resume {
    pub id: ExecutionId,
}

/// A process group ended and its output is queued for the store (from `process`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct ProcessEnded {
    pub(super) id: ExecutionId,
    pub(super) exit: ProcessExit,
}

/// A final execution whose final row could not be stored (from `effects`): it stays
/// shown as it ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub(super) struct KeepShowing {
    pub(super) execution: Execution,
}

impl Handler<Enqueue> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Enqueue, _: &mut Self::Context) -> Reply {
        self.enqueue(msg.request, None, msg.turn, msg.claim)
    }
}

impl Handler<Retry> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Retry, _: &mut Self::Context) -> Reply {
        if let Some(run) = self.runs.get(&msg.id) {
            let execution = Box::new(run.execution.clone());
            return Box::pin(fut::ready(Err(MonitorError::InvalidTransition { action: "retry", execution })));
        }
        self.enqueue(msg.request, Some(msg.id), None, msg.claim)
    }
}

impl Handler<Cancel> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Reply {
        self.request(msg.id, Command::Cancel, ctx)
    }
}

impl Handler<Pause> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Pause, ctx: &mut Self::Context) -> Reply {
        self.request(msg.id, Command::Pause, ctx)
    }
}

impl Handler<Resume> for ExecutionMonitor {
    type Result = Reply;

    fn handle(&mut self, msg: Resume, ctx: &mut Self::Context) -> Reply {
        self.request(msg.id, Command::Resume, ctx)
    }
}

impl Handler<ProcessEnded> for ExecutionMonitor {
    type Result = ();

    fn handle(&mut self, msg: ProcessEnded, ctx: &mut Self::Context) {
        let ProcessEnded { id, exit } = msg;
        tracing::debug!(execution = %id, code = ?exit.code, lines = exit.lines, "process ended");
        if let Err(e) = self.command(id, Command::Exited(exit), ctx) {
            tracing::error!(execution = %id, error = %e, "a process ended that the monitor did not run");
        }
        self.notify_if_drained();
    }
}

impl Handler<ChangesRecorded> for ExecutionMonitor {
    type Result = ();

    /// The end snapshot is stored; an execution still shown shows it too.
    fn handle(&mut self, msg: ChangesRecorded, _: &mut Self::Context) {
        let id = msg.id;
        if let Some(execution) = self.runs.get_mut(&id).map(|run| &mut run.execution).or(self.unsaved.get_mut(&id)) {
            execution.changes = Some(msg.changes);
            self.publish(id);
        }
    }
}

impl Handler<KeepShowing> for ExecutionMonitor {
    type Result = ();

    fn handle(&mut self, msg: KeepShowing, _: &mut Self::Context) {
        let id = msg.execution.id;
        self.unsaved.insert(id, msg.execution);
        self.publish(id);
    }
}

/// An event about an execution, carrying the whole execution as its data.
pub(super) fn execution_event(kind: &'static str, execution: &Execution) -> NewEvent {
    NewEvent::about_execution(kind, execution)
}

impl ExecutionMonitor {
    /// Validates a request, gives it an id and a place at the back of its provider's
    /// queue (or asks for its gate approval), and replies once its row is committed
    /// (only then may it start).
    fn enqueue(
        &mut self,
        request: NewExecution,
        retry_of: Option<ExecutionId>,
        turn: Option<SessionTurn>,
        claim: Option<Claim>,
    ) -> Reply {
        let (mut execution, env) = match self.prepare(request, retry_of, turn) {
            Ok(prepared) => prepared,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let (id, provider) = (execution.id, execution.provider.clone());
        let gated = execution.status == ExecutionStatus::PendingApproval;
        let order = self.next_queue_order;
        self.next_queue_order += 1;
        if !gated {
            let state = self.provider_mut(&provider);
            state.queue.push(id, false);
            execution.queue_position = Some(state.queue.queued().saturating_sub(1));
        }
        let token = IssuedToken::new();
        let hash = token.hash.clone();
        let phase = if gated { Phase::AwaitingApproval } else { Phase::Queued };
        let stored = execution.clone();
        self.runs.insert(id, Run { execution, env: env.clone(), token, phase });
        self.publish(id);

        let (store, arbiter) = (self.store.clone(), self.arbiter.clone());
        let request = gated.then(|| gating::approval_request(&stored));
        let write = async move {
            store
                .record("insert execution", move |c, log| {
                    rows::insert(c, &stored, &env, order, &hash)?;
                    if let Some(claim) = &claim {
                        claim.remember(c, 201, &stored)?;
                    }
                    log.record(c, execution_event("execution.created", &stored))?;
                    if !gated {
                        log.record(c, execution_event("execution.queued", &stored))?;
                    }
                    Ok(())
                })
                .await?;
            let Some(request) = request else { return Ok(None) };
            let approval = arbiter
                .send(Request { request, kind: ApprovalKind::Gate, claim: None })
                .await
                .map_err(|source| MonitorError::Unanswered { actor: "approval arbiter", source })?
                .map_err(|e| MonitorError::Approval(Box::new(e)))?;
            store.write("link approval", move |c| rows::set_approval(c, id, approval.id)).await?;
            Ok(Some(approval.id))
        };
        Box::pin(write.into_actor(self).map(move |stored: Result<Option<ApprovalId>, MonitorError>, act, ctx| {
            match stored {
                Ok(Some(approval_id)) => {
                    // Cancelled meanwhile, it is gone: nothing to link.
                    let _ = act.command(id, Command::GateStored(approval_id), ctx);
                }
                Ok(None) => {
                    if let Some(state) = act.providers.get_mut(&provider) {
                        state.queue.mark_stored(id);
                    }
                    act.try_start(&provider, ctx);
                }
                Err(e) => {
                    tracing::error!(execution = %id, error = %e, "storing a new execution failed");
                    if let Some(state) = act.providers.get_mut(&provider) {
                        state.queue.remove(id);
                    }
                    act.runs.remove(&id);
                    act.publish(id);
                    act.refresh_positions(&provider);
                    return Err(e);
                }
            }
            act.runs.get(&id).map(|run| run.execution.clone()).ok_or(MonitorError::UnknownExecution(id))
        }))
    }

    /// Checks a request against the catalog and builds the execution it asks for.
    fn prepare(
        &mut self,
        request: NewExecution,
        retry_of: Option<ExecutionId>,
        turn: Option<SessionTurn>,
    ) -> Result<(Execution, BTreeMap<String, String>), MonitorError> {
        if !self.accepting {
            return Err(MonitorError::ShuttingDown);
        }
        let Target { profile, workspace, cwd } = self.catalog.read().resolve(
            request.profile.as_deref(),
            request.workspace.as_deref(),
            request.cwd.as_deref(),
        )?;
        validate_env(&request.env).map_err(MonitorError::Invalid)?;
        if request.prompt.contains('\0') {
            return Err(MonitorError::Invalid("prompt must not contain NUL bytes".into()));
        }
        if request.timeout_s == Some(0) {
            return Err(MonitorError::Invalid("timeout_s must be at least 1".into()));
        }
        let isolation = request.isolation.unwrap_or(profile.spec.isolation);
        check_isolation(isolation, request.base.as_deref(), &cwd)?;
        let id = ExecutionId(self.next_id);
        self.next_id += 1;
        // From a session's second turn on, the profile's continue_command (if any).
        // A continue command that resumes the agent's own conversation needs its id: a
        // session whose agent never told one starts it afresh.
        let template = match (&turn, &profile.spec.continue_command) {
            (Some(t), Some(continued))
                if t.turn > 1
                    && (t.agent_session_id.is_some() || !uses_placeholder(continued, "{agent_session_id}")) =>
            {
                continued
            }
            _ => &profile.spec.command,
        };
        // Outside a session, `{session_uuid}` is a fresh UUID, never empty: an agent's
        // `--session-id {session_uuid}` then starts a conversation of its own.
        let fresh_uuid = uuid::Uuid::new_v4().to_string();
        let argv = fill_template(
            template,
            &TemplateValues {
                prompt: &request.prompt,
                workspace: &cwd,
                execution_id: id,
                session_id: turn.as_ref().map(|t| t.session_id),
                session_uuid: Some(turn.as_ref().map_or(fresh_uuid.as_str(), |t| t.session_uuid.as_str())),
                turn: turn.as_ref().map(|t| t.turn),
                agent_session_id: turn.as_ref().and_then(|t| t.agent_session_id.as_deref()),
            },
        );
        let gated = profile.spec.approval == ApprovalPolicy::Always;
        let execution = Execution {
            id,
            status: if gated { ExecutionStatus::PendingApproval } else { ExecutionStatus::Queued },
            profile: profile.name.clone(),
            provider: profile.spec.provider.clone(),
            workspace,
            cwd,
            prompt: request.prompt,
            argv,
            timeout_s: request.timeout_s.or(profile.spec.timeout_s),
            exit_code: None,
            error: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            queue_position: None,
            retry_of,
            session_id: turn.as_ref().map(|t| t.session_id),
            approval_id: None,
            waiting_approval_id: None,
            changes: None,
            sandbox: profile.spec.sandbox.into(),
            isolation,
            branch: None,
            worktree: None,
            base: None,
            base_branch: None,
            waiting_for: None,
            agent: (!profile.spec.format.is_text()).then(|| {
                Box::new(AgentSummary {
                    conversation_tokens: turn.as_ref().and_then(|t| t.conversation_tokens),
                    ..AgentSummary::new(profile.spec.format)
                })
            }),
            base_ref: request.base,
            pruned_at: None,
        };
        Ok((execution, request.env))
    }

    /// An execution left queued by the last run joins its queue again, in order, with
    /// the agent token whose hash the Supervisor stored for it.
    pub(super) fn requeue_recovered(
        &mut self,
        execution: Execution,
        env: BTreeMap<String, String>,
        token: IssuedToken,
    ) {
        let id = execution.id;
        let provider = execution.provider.clone();
        // A gated one still waits for its gate, which the arbiter kept pending.
        let phase = if execution.status == ExecutionStatus::PendingApproval {
            Phase::AwaitingApproval
        } else {
            self.provider_mut(&provider).queue.push(id, true);
            Phase::Queued
        };
        self.runs.insert(id, Run { execution, env, token, phase });
        self.publish(id);
        self.refresh_positions(&provider);
    }
}

/// A worktree needs a git work tree to branch from, and a base is a plain revision.
fn check_isolation(isolation: Isolation, base: Option<&str>, cwd: &str) -> Result<(), MonitorError> {
    match (isolation, base) {
        (Isolation::None, Some(_)) => {
            Err(MonitorError::Invalid("base applies only with isolation = \"worktree\"".into()))
        }
        (Isolation::Worktree, _) if !crate::actors::change_tracker::git::may_be_in_work_tree(Path::new(cwd)) => {
            Err(MonitorError::Invalid(format!(
                "isolation = \"worktree\" needs a directory inside a git work tree; {cwd} is not in one"
            )))
        }
        (Isolation::Worktree, Some(base))
            if base.is_empty() || base.len() > 256 || base.starts_with('-') || base.chars().any(char::is_control) =>
        {
            Err(MonitorError::Invalid(format!("base {base:?} is not a revision")))
        }
        _ => Ok(()),
    }
}
