//! `ApprovalArbiter` owns pending approvals. Decisions arrive one message at a time, so
//! the first decision for an approval wins by construction: it is taken at once, stored
//! (with its event) before anyone is told, and every later decision waits for that
//! commit and gets `AlreadyDecided` with the winner. Deadlines are kept in order and one
//! timer waits for the earliest (an actix context polls every timer it holds each time
//! it wakes, so a timer per approval would make each decision cost O(pending)); when it
//! fires, the defaults of the overdue approvals apply. The ExecutionMonitor hears of
//! every approval of an execution; the Supervisor stops it at shutdown (`StopSettling`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::domain::Word;
use crate::domain::{
    now, Approval, ApprovalId, ApprovalKind, ApprovalStatus, Decision, ExecutionId, NewApproval, NewEvent,
};
use crate::store::idempotency::Claim;
use crate::store::{approvals as rows, Store, StoreError};

pub use crate::domain::MAX_TIMEOUT_S;
/// The longest title.
const MAX_TITLE: usize = 500;
/// Settled approvals kept in memory, so the deciders who lost a race are answered
/// without a database read (an outcome never changes once stored).
const RECENTLY_SETTLED: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    #[error("no approval {0}")]
    NotFound(ApprovalId),
    #[error("approval {} was already decided: {} by {}", .0.id, .0.status.as_str(), .0.decided_by.as_deref().unwrap_or("?"))]
    AlreadyDecided(Box<Approval>),
    #[error("approval {} expired at its deadline ({} applied)", .0.id, .0.default.as_str())]
    Expired(Box<Approval>),
    #[error("{0}")]
    Invalid(String),
    #[error("warden is shutting down: approvals are neither asked nor decided until it is back")]
    ShuttingDown,
    /// The winning decision could not be stored (its storage failed): try again.
    #[error("{0}")]
    NotStored(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Ask a human; replies once the approval is stored and its deadline armed.
#[derive(Message, Debug)]
#[rtype(result = "Result<Approval, ArbiterError>")]
pub struct Request {
    pub request: NewApproval,
    /// Who asks, from the credential (the ExecutionMonitor's gates are `Gate`).
    pub kind: ApprovalKind,
    /// The request's `Idempotency-Key`: remembered with the approval's row.
    pub claim: Option<Claim>,
}

/// A decision from some client. The first one for a pending approval wins.
#[derive(Message, Debug)]
#[rtype(result = "Result<Approval, ArbiterError>")]
pub struct Decide {
    pub id: ApprovalId,
    pub decision: Decision,
    pub reason: Option<String>,
    /// Who answered: the `X-Warden-Client` header, the WebSocket client id, or `api`.
    pub decided_by: String,
}

/// A receiver that fires with the approval once it is settled; `None` if it is not
/// pending (long polls).
#[derive(Message, Debug)]
#[rtype(result = "Option<oneshot::Receiver<Approval>>")]
pub struct Watch {
    pub id: ApprovalId,
}

/// Whoever asked no longer waits (the hook was stopped): a pending approval is cancelled,
/// so no later answer seems to count. Replies with it; a settled one is refused as a
/// decision would be.
#[derive(Message, Debug)]
#[rtype(result = "Result<Approval, ArbiterError>")]
pub struct Withdraw {
    pub id: ApprovalId,
    /// Who withdrew it, in words (`owner`, `the agent of execution 12`).
    pub by: String,
}

/// The execution ended or was cancelled: its pending approvals are cancelled.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CancelForExecution {
    pub execution_id: ExecutionId,
    pub reason: String,
}

/// Shutdown: no deadline fires and nothing is asked or decided any more, so no write
/// lands after the store's last flush (pending approvals carry on at the next start).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopSettling;

/// How many approvals wait for a decision.
#[derive(Message, Debug)]
#[rtype(result = "usize")]
pub struct CountPending;

/// Told to the ExecutionMonitor: an approval about one of its executions opened.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ApprovalOpened {
    pub approval: Approval,
}

/// Told to the ExecutionMonitor: an approval about one of its executions is settled.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ApprovalSettled {
    pub approval: Approval,
}

/// Where the arbiter tells about approvals of executions.
#[derive(Clone)]
pub struct ExecutionListener {
    pub opened: Recipient<ApprovalOpened>,
    pub settled: Recipient<ApprovalSettled>,
}

struct Pending {
    approval: Approval,
    /// The winning decision while it is being stored; later deciders wait for it.
    settling: Option<Approval>,
    losers: Vec<oneshot::Sender<Result<Approval, ArbiterError>>>,
    /// Long polls waiting for the outcome.
    watchers: Vec<oneshot::Sender<Approval>>,
}

/// The actor.
pub struct ApprovalArbiter {
    store: Store,
    listener: ExecutionListener,
    /// Used when a request names no timeout.
    default_timeout: Duration,
    next_id: ApprovalId,
    /// Every pending approval (and one being settled).
    pending: HashMap<ApprovalId, Pending>,
    /// The deadlines of the pending approvals not being settled, earliest first.
    deadlines: BTreeSet<(DateTime<Utc>, ApprovalId)>,
    /// The one timer, and the time it fires at.
    alarm: Option<(DateTime<Utc>, SpawnHandle)>,
    /// Set at shutdown (`StopSettling`).
    stopping: bool,
    /// The last `RECENTLY_SETTLED` stored outcomes, and the order they came in.
    settled: HashMap<ApprovalId, Approval>,
    settled_order: VecDeque<ApprovalId>,
}

impl ApprovalArbiter {
    /// `pending` are the approvals still pending in the database: their deadlines are
    /// armed again (overdue ones expire at once).
    pub fn new(
        store: Store,
        listener: ExecutionListener,
        default_timeout: Duration,
        max_id: ApprovalId,
        pending: Vec<Approval>,
    ) -> Self {
        let pending = pending
            .into_iter()
            .map(|approval| {
                (approval.id, Pending { approval, settling: None, losers: Vec::new(), watchers: Vec::new() })
            })
            .collect();
        ApprovalArbiter {
            store,
            listener,
            default_timeout,
            next_id: ApprovalId(max_id.0 + 1),
            pending,
            deadlines: BTreeSet::new(),
            alarm: None,
            stopping: false,
            settled: HashMap::new(),
            settled_order: VecDeque::new(),
        }
    }

    fn remember_settled(&mut self, outcome: Approval) {
        if self.settled_order.len() == RECENTLY_SETTLED {
            if let Some(oldest) = self.settled_order.pop_front() {
                self.settled.remove(&oldest);
            }
        }
        self.settled_order.push_back(outcome.id);
        self.settled.insert(outcome.id, outcome);
    }

    /// Puts the approval's deadline in line.
    fn arm(&mut self, id: ApprovalId, ctx: &mut Context<Self>) {
        let Some(pending) = self.pending.get(&id) else { return };
        self.deadlines.insert((pending.approval.expires_at, id));
        self.set_alarm(ctx);
    }

    /// Takes the approval's deadline out of line (the timer may fire for nothing).
    fn disarm(&mut self, id: ApprovalId) {
        if let Some(pending) = self.pending.get(&id) {
            self.deadlines.remove(&(pending.approval.expires_at, id));
        }
    }

    /// Makes the timer fire at the earliest deadline, unless it already fires sooner.
    fn set_alarm(&mut self, ctx: &mut Context<Self>) {
        let Some(&(first, _)) = self.deadlines.first().filter(|_| !self.stopping) else { return };
        if self.alarm.as_ref().is_some_and(|(at, _)| *at <= first) {
            return;
        }
        if let Some((_, timer)) = self.alarm.take() {
            ctx.cancel_future(timer);
        }
        let left = (first - now()).to_std().unwrap_or(Duration::ZERO);
        let timer = ctx.run_later(left, |act, ctx| {
            act.alarm = None;
            let current = now();
            while let Some(&(at, id)) = act.deadlines.first() {
                if at > current {
                    break;
                }
                act.deadlines.pop_first();
                act.expire(id, ctx);
            }
            act.set_alarm(ctx);
        });
        self.alarm = Some((first, timer));
    }

    /// The deadline passed: the default applies and the approval is `expired`.
    fn expire(&mut self, id: ApprovalId, ctx: &mut Context<Self>) {
        let Some(pending) = self.pending.get(&id).filter(|p| p.settling.is_none()) else { return };
        let mut expired = pending.approval.clone();
        expired.status = ApprovalStatus::Expired;
        expired.decided_by = Some("deadline".into());
        expired.decided_at = Some(now());
        tracing::info!(approval = %id, default = expired.default.as_str(), "approval expired");
        self.settle(expired, "approval.expired", ctx);
    }

    /// Takes the outcome now (so no other can win), stores it with its event, then
    /// tells everyone waiting. Returns a receiver for the stored outcome.
    fn settle(
        &mut self,
        outcome: Approval,
        kind: &'static str,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<Approval, ArbiterError>> {
        let (reply, answer) = oneshot::channel();
        let id = outcome.id;
        self.disarm(id);
        if let Some(pending) = self.pending.get_mut(&id) {
            pending.settling = Some(outcome.clone());
        }
        let store = self.store.clone();
        let stored = outcome.clone();
        let write = async move {
            store
                .record("settle approval", move |c, log| {
                    rows::settle(c, &stored)?;
                    log.record(c, NewEvent::about_approval(kind, &stored)).map(|_| ())
                })
                .await
        };
        ctx.spawn(write.into_actor(self).map(move |written, act, ctx| match written {
            Ok(()) => {
                let Some(pending) = act.pending.remove(&id) else { return };
                for loser in pending.losers {
                    let _ = loser.send(Err(ArbiterError::AlreadyDecided(Box::new(outcome.clone()))));
                }
                for watcher in pending.watchers {
                    let _ = watcher.send(outcome.clone());
                }
                if outcome.execution_id.is_some() {
                    act.listener.settled.do_send(ApprovalSettled { approval: outcome.clone() });
                }
                act.remember_settled(outcome.clone());
                let _ = reply.send(Ok(outcome));
            }
            Err(e) => {
                tracing::error!(approval = %id, error = %e, "storing a decision failed; the approval stays pending");
                if let Some(pending) = act.pending.get_mut(&id) {
                    pending.settling = None;
                    for loser in pending.losers.drain(..) {
                        let _ = loser
                            .send(Err(ArbiterError::NotStored("the decision could not be stored; try again".into())));
                    }
                }
                act.arm(id, ctx);
                let _ = reply.send(Err(e.into()));
            }
        }));
        answer
    }
}

impl Actor for ApprovalArbiter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
        let ids: Vec<ApprovalId> = self.pending.keys().copied().collect();
        if !ids.is_empty() {
            tracing::info!(pending = ids.len(), "approval deadlines armed again");
        }
        for id in ids {
            self.arm(id, ctx);
        }
    }
}

impl Handler<Request> for ApprovalArbiter {
    type Result = ResponseActFuture<Self, Result<Approval, ArbiterError>>;

    fn handle(&mut self, msg: Request, _: &mut Self::Context) -> Self::Result {
        if self.stopping {
            return Box::pin(fut::ready(Err(ArbiterError::ShuttingDown)));
        }
        let Request { request, kind, claim } = msg;
        let title = request.title.trim().to_owned();
        let timeout = request.timeout_s.map(Duration::from_secs).unwrap_or(self.default_timeout);
        let invalid = if title.is_empty() {
            Some("title must not be empty".to_owned())
        } else if title.chars().count() > MAX_TITLE {
            Some(format!("title must be at most {MAX_TITLE} characters"))
        } else if !(1..=MAX_TIMEOUT_S).contains(&timeout.as_secs()) {
            Some(format!("timeout_s must be between 1 and {MAX_TIMEOUT_S}"))
        } else {
            None
        };
        if let Some(problem) = invalid {
            return Box::pin(fut::ready(Err(ArbiterError::Invalid(problem))));
        }
        let created_at = now();
        let approval = Approval {
            id: self.next_id,
            status: ApprovalStatus::Pending,
            kind,
            title,
            details: request.details,
            source: request.source.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "api".into()),
            execution_id: request.execution_id,
            session_id: request.session_id,
            created_at,
            expires_at: created_at + chrono::Duration::from_std(timeout).unwrap_or_default(),
            default: request.default.unwrap_or(Decision::Deny),
            decided_by: None,
            decided_at: None,
            reason: None,
        };
        self.next_id = ApprovalId(self.next_id.0 + 1);
        let store = self.store.clone();
        let stored = approval.clone();
        let write = async move {
            store
                .record("insert approval", move |c, log| {
                    rows::insert(c, &stored)?;
                    if let Some(claim) = &claim {
                        claim.remember(c, 201, &stored)?;
                    }
                    log.record(c, NewEvent::about_approval("approval.requested", &stored)).map(|_| ())
                })
                .await
        };
        Box::pin(write.into_actor(self).map(move |written, act, ctx| {
            written?;
            let id = approval.id;
            act.pending.insert(
                id,
                Pending { approval: approval.clone(), settling: None, losers: Vec::new(), watchers: Vec::new() },
            );
            act.arm(id, ctx);
            if approval.execution_id.is_some() {
                act.listener.opened.do_send(ApprovalOpened { approval: approval.clone() });
            }
            tracing::info!(approval = %id, title = ?approval.title, "approval requested");
            Ok(approval)
        }))
    }
}

impl Handler<Decide> for ApprovalArbiter {
    // Plain futures, each a task of its own: the answers never need the actor again, and
    // context items would all be polled on every wake-up.
    type Result = ResponseFuture<Result<Approval, ArbiterError>>;

    fn handle(&mut self, msg: Decide, ctx: &mut Self::Context) -> Self::Result {
        let Decide { id, decision, reason, decided_by } = msg;
        if self.stopping && self.pending.contains_key(&id) {
            return Box::pin(std::future::ready(Err(ArbiterError::ShuttingDown)));
        }
        match self.pending.get_mut(&id) {
            Some(pending) if pending.settling.is_none() => {
                let mut winner = pending.approval.clone();
                winner.status = match decision {
                    Decision::Approve => ApprovalStatus::Approved,
                    Decision::Deny => ApprovalStatus::Denied,
                };
                winner.decided_by = Some(decided_by);
                winner.decided_at = Some(now());
                winner.reason = reason.filter(|r| !r.trim().is_empty());
                tracing::info!(approval = %id, decision = decision.as_str(), by = ?winner.decided_by, "approval decided");
                let answer = self.settle(winner, "approval.decided", ctx);
                Box::pin(async move { answer.await.unwrap_or(Err(ArbiterError::NotFound(id))) })
            }
            Some(pending) => {
                // Someone else won a moment ago; answer once their decision is stored.
                let (loser, answer) = oneshot::channel();
                pending.losers.push(loser);
                Box::pin(async move { answer.await.unwrap_or(Err(ArbiterError::NotFound(id))) })
            }
            None => match self.settled.get(&id) {
                Some(outcome) => Box::pin(std::future::ready(Err(refusal(outcome.clone())))),
                None => {
                    let store = self.store.clone();
                    Box::pin(async move {
                        match store.read("get approval", move |c| rows::get(c, id)).await? {
                            Some(settled) => Err(refusal(settled)),
                            None => Err(ArbiterError::NotFound(id)),
                        }
                    })
                }
            },
        }
    }
}

/// What a decision for an approval that is no longer pending gets.
fn refusal(settled: Approval) -> ArbiterError {
    if settled.status == ApprovalStatus::Expired {
        ArbiterError::Expired(Box::new(settled))
    } else {
        ArbiterError::AlreadyDecided(Box::new(settled))
    }
}

impl Handler<Watch> for ApprovalArbiter {
    type Result = MessageResult<Watch>;

    fn handle(&mut self, msg: Watch, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.pending.get_mut(&msg.id).map(|pending| {
            // Long polls whose clients left are forgotten here, so they cannot pile up.
            pending.watchers.retain(|watcher| !watcher.is_closed());
            let (watcher, fired) = oneshot::channel();
            pending.watchers.push(watcher);
            fired
        }))
    }
}

impl Handler<Withdraw> for ApprovalArbiter {
    type Result = ResponseFuture<Result<Approval, ArbiterError>>;

    fn handle(&mut self, msg: Withdraw, ctx: &mut Self::Context) -> Self::Result {
        let Withdraw { id, by } = msg;
        if self.stopping && self.pending.contains_key(&id) {
            return Box::pin(std::future::ready(Err(ArbiterError::ShuttingDown)));
        }
        match self.pending.get(&id) {
            Some(pending) if pending.settling.is_none() => {
                let mut withdrawn = pending.approval.clone();
                withdrawn.status = ApprovalStatus::Cancelled;
                withdrawn.decided_by = Some(by);
                withdrawn.decided_at = Some(now());
                withdrawn.reason = Some("the asker stopped waiting".into());
                let answer = self.settle(withdrawn, "approval.cancelled", ctx);
                Box::pin(async move { answer.await.unwrap_or(Err(ArbiterError::NotFound(id))) })
            }
            // Being decided, or settled: the same answer a late decision gets.
            _ => {
                let late = Decide { id, decision: Decision::Deny, reason: None, decided_by: String::new() };
                <Self as Handler<Decide>>::handle(self, late, ctx)
            }
        }
    }
}

impl Handler<CancelForExecution> for ApprovalArbiter {
    type Result = ();

    fn handle(&mut self, msg: CancelForExecution, ctx: &mut Self::Context) {
        let doomed: Vec<Approval> = self
            .pending
            .values()
            .filter(|p| p.settling.is_none() && p.approval.execution_id == Some(msg.execution_id))
            .map(|p| p.approval.clone())
            .collect();
        for mut approval in doomed {
            approval.status = ApprovalStatus::Cancelled;
            approval.decided_by = Some("warden".into());
            approval.decided_at = Some(now());
            approval.reason = Some(msg.reason.clone());
            // Nobody waits for a cancellation's answer; the receiver is dropped.
            drop(self.settle(approval, "approval.cancelled", ctx));
        }
    }
}

impl Handler<StopSettling> for ApprovalArbiter {
    type Result = ();

    fn handle(&mut self, _: StopSettling, ctx: &mut Self::Context) {
        self.stopping = true;
        if let Some((_, timer)) = self.alarm.take() {
            ctx.cancel_future(timer);
        }
    }
}

impl Handler<CountPending> for ApprovalArbiter {
    type Result = usize;

    fn handle(&mut self, _: CountPending, _: &mut Self::Context) -> usize {
        self.pending.values().filter(|p| p.settling.is_none()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for the ExecutionMonitor: keeps what it is told.
    #[derive(Default)]
    struct Listener {
        settled: Vec<Approval>,
    }

    impl Actor for Listener {
        type Context = Context<Self>;
    }

    impl Handler<ApprovalOpened> for Listener {
        type Result = ();
        fn handle(&mut self, _: ApprovalOpened, _: &mut Self::Context) {}
    }

    impl Handler<ApprovalSettled> for Listener {
        type Result = ();
        fn handle(&mut self, msg: ApprovalSettled, _: &mut Self::Context) {
            self.settled.push(msg.approval);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<Approval>")]
    struct Told;

    impl Handler<Told> for Listener {
        type Result = MessageResult<Told>;
        fn handle(&mut self, _: Told, _: &mut Self::Context) -> Self::Result {
            MessageResult(self.settled.clone())
        }
    }

    fn arbiter(store: Store, listener: &Addr<Listener>) -> Addr<ApprovalArbiter> {
        let listener =
            ExecutionListener { opened: listener.clone().recipient(), settled: listener.clone().recipient() };
        ApprovalArbiter::new(store, listener, Duration::from_secs(600), ApprovalId(0), Vec::new()).start()
    }

    fn asking(execution_id: Option<ExecutionId>) -> Request {
        let request = NewApproval {
            title: "rm -rf build".into(),
            details: serde_json::Value::Null,
            timeout_s: None,
            default: None,
            execution_id,
            session_id: None,
            source: None,
        };
        Request { request, kind: ApprovalKind::Owner, claim: None }
    }

    /// Fifty answers sent at once, through the mailbox: one wins, every other is told
    /// the winner, the store keeps the winner and the monitor hears of it once.
    #[actix::test]
    async fn the_first_answer_wins_and_every_later_one_is_told_the_winner() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(&dir.path().join("a.db")).expect("a store");
        let listener = Listener::default().start();
        let arbiter = arbiter(store.clone(), &listener);
        let asked = arbiter.send(asking(Some(ExecutionId(7)))).await.expect("answered").expect("asked");
        let answers = futures_util::future::join_all((0..50).map(|i| {
            let decision = if i % 2 == 0 { Decision::Approve } else { Decision::Deny };
            arbiter.send(Decide { id: asked.id, decision, reason: None, decided_by: format!("owner via {i}") })
        }))
        .await;
        let (won, lost): (Vec<_>, Vec<_>) =
            answers.into_iter().map(|a| a.expect("the arbiter answers")).partition(|a| a.is_ok());
        assert_eq!(won.len(), 1, "exactly one answer wins");
        let winner = won.into_iter().next().and_then(Result::ok).expect("a winner");
        for refused in lost {
            match refused {
                Err(ArbiterError::AlreadyDecided(told)) => assert_eq!(*told, winner),
                other => panic!("a losing answer got {other:?}"),
            }
        }
        let stored = store.read("get", move |c| rows::get(c, asked.id)).await.expect("read").expect("stored");
        assert_eq!(stored, winner);
        let told = listener.send(Told).await.expect("the listener answers");
        assert_eq!(told, vec![winner], "the monitor hears of the outcome once");
    }

    /// A withdrawn approval is settled as cancelled; answering it afterwards is refused.
    #[actix::test]
    async fn a_withdrawn_approval_takes_no_answer() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(&dir.path().join("a.db")).expect("a store");
        let arbiter = arbiter(store, &Listener::default().start());
        let asked = arbiter.send(asking(None)).await.expect("answered").expect("asked");
        let withdrawn = arbiter.send(Withdraw { id: asked.id, by: "owner".into() }).await.expect("answered");
        assert_eq!(withdrawn.expect("withdrawn").status, ApprovalStatus::Cancelled);
        let late = Decide { id: asked.id, decision: Decision::Approve, reason: None, decided_by: "owner".into() };
        assert!(matches!(arbiter.send(late).await.expect("answered"), Err(ArbiterError::AlreadyDecided(_))));
    }
}
