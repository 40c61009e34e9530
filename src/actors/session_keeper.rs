//! `SessionKeeper` owns multi-turn conversations (sessions). Each user message becomes
//! a turn: an execution enqueued with the ExecutionMonitor, one at a time per session, in
//! the order sent; when a turn ends (the monitor tells it), the agent's stdout becomes
//! its reply and the next waiting message starts. HTTP handlers send it messages.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;

use actix::prelude::*;
use uuid::Uuid;

use super::catalog::{Catalog, CatalogError, ResolveTarget};
use super::execution_monitor::{Cancel, Enqueue, ExecutionMonitor, MonitorError, TurnEnded};
use crate::domain::{
    now, Execution, ExecutionId, ExecutionStatus, NewEvent, NewExecution, NewSession, Role, Session, SessionId,
    SessionMessage, SessionStatus, SessionTurn,
};
use crate::store::idempotency::Claim;
use crate::store::{agent_activity, sessions as rows, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("no session {0}")]
    NotFound(SessionId),
    #[error("session {0} is closed")]
    Closed(SessionId),
    #[error("{0}")]
    Invalid(String),
    /// Another actor did not answer (it stopped): the daemon's trouble, not the request's.
    #[error("the {actor} did not answer: {source}")]
    Unanswered { actor: &'static str, source: actix::MailboxError },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Start a conversation.
#[derive(Message, Debug)]
#[rtype(result = "Result<Session, KeeperError>")]
pub struct CreateSession {
    pub request: NewSession,
    /// The request's `Idempotency-Key`: remembered with the session's row.
    pub claim: Option<Claim>,
}

/// Send a user message: it becomes the next turn, now or after the running one.
#[derive(Message, Debug)]
#[rtype(result = "Result<Sent, KeeperError>")]
pub struct SendMessage {
    pub session_id: SessionId,
    pub content: String,
    /// The request's `Idempotency-Key`: remembered with the message's row (as sent, its
    /// turn not yet started), so a retry never sends it twice.
    pub claim: Option<Claim>,
}

/// What `SendMessage` did: the stored message and, if its turn started at once, the
/// execution (null while it waits behind a running turn).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Sent {
    pub message: SessionMessage,
    pub execution: Option<Execution>,
}

/// Close: the running turn is cancelled, waiting messages never run; history is kept.
#[derive(Message, Debug)]
#[rtype(result = "Result<Session, KeeperError>")]
pub struct CloseSession {
    pub session_id: SessionId,
}

/// Change the title.
#[derive(Message, Debug)]
#[rtype(result = "Result<Session, KeeperError>")]
pub struct RenameSession {
    pub session_id: SessionId,
    pub title: String,
}

/// A session that is not closed: what the keeper tracks.
struct Open {
    session: Session,
    /// The running turn's execution.
    running: Option<ExecutionId>,
    /// User messages waiting for their turn, oldest first.
    waiting: VecDeque<SessionMessage>,
}

/// The actor.
pub struct SessionKeeper {
    store: Store,
    /// Checks a new session's profile and place.
    catalog: Addr<Catalog>,
    monitor: Addr<ExecutionMonitor>,
    next_id: SessionId,
    open: HashMap<SessionId, Open>,
}

impl SessionKeeper {
    /// `open` are the sessions not closed and `waiting` their queued user messages.
    pub fn new(
        store: Store,
        catalog: Addr<Catalog>,
        monitor: Addr<ExecutionMonitor>,
        max_id: SessionId,
        open: Vec<Session>,
        waiting: Vec<SessionMessage>,
    ) -> Self {
        let mut sessions: HashMap<SessionId, Open> = open
            .into_iter()
            .map(|session| {
                let running = (session.status == SessionStatus::Running).then_some(session.last_execution_id).flatten();
                (session.id, Open { session, running, waiting: VecDeque::new() })
            })
            .collect();
        for message in waiting {
            if let Some(open) = sessions.get_mut(&message.session_id) {
                open.waiting.push_back(message);
            }
        }
        SessionKeeper { store, catalog, monitor, next_id: max_id.next(), open: sessions }
    }

    /// Starts the next waiting turn of a session if none runs.
    fn advance(&mut self, session_id: SessionId, ctx: &mut Context<Self>) {
        let Some(open) = self.open.get_mut(&session_id) else { return };
        if open.running.is_some() {
            return;
        }
        let Some(message) = open.waiting.pop_front() else {
            if open.session.status != SessionStatus::Idle {
                open.session.status = SessionStatus::Idle;
                open.session.updated_at = now();
                let session = open.session.clone();
                self.store.record_detached("session idle", move |c, _| rows::update(c, &session));
            }
            return;
        };
        let fut = self.start_turn(session_id, message, None);
        ctx.spawn(fut.into_actor(self).map(move |started, act, ctx| {
            act.turn_started(session_id, &started, ctx);
        }));
    }

    /// Enqueues the turn's execution and links the message to it. The session counts as
    /// running from now on. A message sent with an idempotency key that starts its turn
    /// at once is remembered again here with the execution, as its answer says.
    fn start_turn(
        &mut self,
        session_id: SessionId,
        message: SessionMessage,
        claim: Option<Claim>,
    ) -> impl std::future::Future<Output = Result<Execution, KeeperError>> + 'static {
        let open = self.open.get_mut(&session_id).expect("checked by the caller");
        open.session.turns += 1;
        open.session.status = SessionStatus::Running;
        open.session.updated_at = now();
        // A placeholder until the execution id is known: no second turn starts meanwhile.
        open.running = Some(ExecutionId(0));
        let session = open.session.clone();
        let turn = SessionTurn {
            session_id,
            session_uuid: session.session_uuid.clone(),
            turn: session.turns,
            agent_session_id: session.agent_session_id.clone(),
            conversation_tokens: session.conversation_tokens,
        };
        let request = NewExecution {
            prompt: message.content.clone(),
            profile: Some(session.profile.clone()),
            workspace: session.workspace.clone(),
            cwd: if session.workspace.is_none() { Some(session.cwd.clone()) } else { None },
            ..Default::default()
        };
        let (monitor, store) = (self.monitor.clone(), self.store.clone());
        async move {
            let execution = monitor
                .send(Enqueue { request, turn: Some(turn), claim: None })
                .await
                .map_err(|source| KeeperError::Unanswered { actor: "execution monitor", source })??;
            let mut session = session;
            session.last_execution_id = Some(execution.id);
            let execution_id = execution.id;
            let answer = execution.clone();
            store
                .record("start session turn", move |c, _| {
                    rows::set_message_execution(c, message.id, execution_id)?;
                    if let Some(claim) = &claim {
                        let message = SessionMessage { execution_id: Some(execution_id), ..message };
                        claim.remember(c, 202, &Sent { message, execution: Some(answer) })?;
                    }
                    rows::update(c, &session)
                })
                .await?;
            Ok(execution)
        }
    }
}

impl SessionKeeper {
    /// Records a turn's execution as running, or, if it could not start, leaves the
    /// session usable and moves on to the next message.
    fn turn_started(
        &mut self,
        session_id: SessionId,
        started: &Result<Execution, KeeperError>,
        ctx: &mut Context<Self>,
    ) {
        match started {
            Ok(execution) => match self.open.get_mut(&session_id) {
                Some(open) => {
                    open.running = Some(execution.id);
                    open.session.last_execution_id = Some(execution.id);
                }
                // Closed while its turn was being queued: that turn must not run.
                None => self.monitor.do_send(Cancel { id: execution.id }),
            },
            Err(e) => {
                tracing::error!(session = %session_id, error = %e, "a session turn could not start");
                if let Some(open) = self.open.get_mut(&session_id) {
                    open.running = None;
                }
                self.advance(session_id, ctx);
            }
        }
    }
}

impl Actor for SessionKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let ids: Vec<SessionId> = self.open.keys().copied().collect();
        for id in ids {
            self.advance(id, ctx);
        }
    }
}

fn session_event(kind: &'static str, session: &Session, data: serde_json::Value) -> NewEvent {
    NewEvent { session_id: Some(session.id), workspace: session.workspace.clone(), ..NewEvent::new(kind, data) }
}

impl Handler<CreateSession> for SessionKeeper {
    type Result = ResponseActFuture<Self, Result<Session, KeeperError>>;

    fn handle(&mut self, msg: CreateSession, _: &mut Self::Context) -> Self::Result {
        let NewSession { workspace, cwd, profile, title } = msg.request;
        let claim = msg.claim;
        let title = title.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        if title.as_ref().is_some_and(|t| t.chars().count() > 200) {
            return Box::pin(fut::ready(Err(KeeperError::Invalid("title must be at most 200 characters".into()))));
        }
        let id = self.next_id;
        self.next_id = id.next();
        let (catalog, store) = (self.catalog.clone(), self.store.clone());
        let create = async move {
            let target = catalog
                .send(ResolveTarget { profile, workspace, cwd })
                .await
                .map_err(|source| KeeperError::Unanswered { actor: "catalog", source })??;
            let at = now();
            let session = Session {
                id,
                title: title.unwrap_or_else(|| format!("Session {id}")),
                workspace: target.workspace,
                cwd: target.cwd,
                profile: target.profile.name,
                status: SessionStatus::Idle,
                session_uuid: Uuid::new_v4().to_string(),
                turns: 0,
                created_at: at,
                updated_at: at,
                last_execution_id: None,
                agent_session_id: None,
                conversation_tokens: None,
            };
            let stored = session.clone();
            store
                .record("insert session", move |c, log| {
                    rows::insert(c, &stored)?;
                    if let Some(claim) = &claim {
                        claim.remember(c, 201, &stored)?;
                    }
                    let data = serde_json::to_value(&stored).unwrap_or_default();
                    log.record(c, session_event("session.created", &stored, data)).map(|_| ())
                })
                .await?;
            Ok(session)
        };
        Box::pin(create.into_actor(self).map(|created: Result<Session, KeeperError>, act, _| {
            let session = created?;
            act.open.insert(session.id, Open { session: session.clone(), running: None, waiting: VecDeque::new() });
            Ok(session)
        }))
    }
}

impl Handler<SendMessage> for SessionKeeper {
    type Result = ResponseActFuture<Self, Result<Sent, KeeperError>>;

    fn handle(&mut self, msg: SendMessage, _: &mut Self::Context) -> Self::Result {
        let SendMessage { session_id, content, claim } = msg;
        if content.trim().is_empty() {
            return Box::pin(fut::ready(Err(KeeperError::Invalid("content must not be empty".into()))));
        }
        if content.contains('\0') {
            return Box::pin(fut::ready(Err(KeeperError::Invalid("content must not contain NUL bytes".into()))));
        }
        let Some(open) = self.open.get(&session_id) else {
            let store = self.store.clone();
            return Box::pin(
                async move {
                    match store.read("get session", move |c| rows::get(c, session_id)).await? {
                        Some(_) => Err(KeeperError::Closed(session_id)),
                        None => Err(KeeperError::NotFound(session_id)),
                    }
                }
                .into_actor(self),
            );
        };
        let session = open.session.clone();
        let store = self.store.clone();
        let turn_claim = claim.clone();
        let stored = async move {
            store
                .record("insert user message", move |c, log| {
                    let message = rows::insert_message(c, session_id, Role::User, &content, None, now())?;
                    if let Some(claim) = &claim {
                        claim.remember(c, 202, &Sent { message: message.clone(), execution: None })?;
                    }
                    let data = serde_json::to_value(&message).unwrap_or_default();
                    log.record(c, session_event("session.message", &session, data))?;
                    Ok(message)
                })
                .await
        };
        Box::pin(stored.into_actor(self).then(move |stored, act, _| {
            let outcome: Box<dyn ActorFuture<Self, Output = Result<Sent, KeeperError>>> = match stored {
                Err(e) => Box::new(fut::ready(Err(e.into()))),
                Ok(message) => match act.open.get_mut(&session_id) {
                    None => Box::new(fut::ready(Err(KeeperError::Closed(session_id)))),
                    Some(open) if open.running.is_some() || !open.waiting.is_empty() => {
                        open.waiting.push_back(message.clone());
                        Box::new(fut::ready(Ok(Sent { message, execution: None })))
                    }
                    Some(_) => {
                        let turn = act.start_turn(session_id, message.clone(), turn_claim);
                        Box::new(turn.into_actor(act).map(move |started, act, ctx| {
                            act.turn_started(session_id, &started, ctx);
                            let execution = started?;
                            let mut message = message;
                            message.execution_id = Some(execution.id);
                            Ok(Sent { message, execution: Some(execution) })
                        }))
                    }
                },
            };
            Pin::from(outcome)
        }))
    }
}

impl Handler<TurnEnded> for SessionKeeper {
    type Result = ();

    /// The turn's reply becomes the agent's message — for an agent whose JSON stream
    /// warden reads, its answer (or its last message), else its stdout — with the final
    /// status when it did not succeed; the agent's conversation id is kept for the next
    /// turn. Then the next waiting message starts.
    fn handle(&mut self, msg: TurnEnded, ctx: &mut Self::Context) {
        let execution = msg.execution;
        let Some(session_id) = execution.session_id else { return };
        let agent_session_id = execution.agent.as_ref().and_then(|agent| agent.agent_session_id.clone());
        let conversation_tokens = execution.agent.as_ref().and_then(|agent| agent.conversation_tokens);
        let session = match self.open.get_mut(&session_id) {
            Some(open) => {
                if open.running == Some(execution.id) {
                    open.running = None;
                }
                if agent_session_id.is_some() {
                    open.session.agent_session_id.clone_from(&agent_session_id);
                    open.session.conversation_tokens = conversation_tokens;
                }
                Some(open.session.clone())
            }
            None => None,
        };
        let store = self.store.clone();
        let reply = async move {
            let execution_id = execution.id;
            let record = store.record("record agent reply", move |c, log| {
                if rows::has_reply(c, execution_id)? {
                    return Ok(());
                }
                let mut content = match &execution.agent {
                    Some(agent) => match agent.result.as_ref().filter(|result| !result.text.is_empty()) {
                        Some(result) => result.text.clone(),
                        None => agent_activity::last_message(c, execution_id)?.unwrap_or_default(),
                    },
                    None => rows::stdout_of(c, execution_id)?,
                };
                if execution.status != ExecutionStatus::Succeeded {
                    let why = execution.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&format!("[the turn ended {}{why}]", execution.status));
                }
                let message = rows::insert_message(c, session_id, Role::Agent, &content, Some(execution_id), now())?;
                if let Some(agent_session_id) = &agent_session_id {
                    rows::set_agent_conversation(c, session_id, agent_session_id, conversation_tokens)?;
                }
                if let Some(session) = &session {
                    let data = serde_json::to_value(&message).unwrap_or_default();
                    log.record(c, session_event("session.message", session, data))?;
                }
                Ok(())
            });
            if let Err(e) = record.await {
                tracing::error!(session = %session_id, error = %e, "recording an agent reply failed");
            }
        };
        ctx.spawn(reply.into_actor(self).map(move |(), act, ctx| act.advance(session_id, ctx)));
    }
}

impl Handler<CloseSession> for SessionKeeper {
    type Result = ResponseActFuture<Self, Result<Session, KeeperError>>;

    fn handle(&mut self, msg: CloseSession, _: &mut Self::Context) -> Self::Result {
        let session_id = msg.session_id;
        let Some(open) = self.open.remove(&session_id) else {
            let store = self.store.clone();
            return Box::pin(
                async move {
                    match store.read("get session", move |c| rows::get(c, session_id)).await? {
                        Some(session) => Ok(session),
                        None => Err(KeeperError::NotFound(session_id)),
                    }
                }
                .into_actor(self),
            );
        };
        let mut session = open.session;
        session.status = SessionStatus::Closed;
        session.updated_at = now();
        if let Some(running) = open.running.filter(|id| id.0 != 0) {
            self.monitor.do_send(Cancel { id: running });
        }
        let (store, stored) = (self.store.clone(), session.clone());
        Box::pin(
            async move {
                store
                    .record("close session", move |c, log| {
                        rows::update(c, &stored)?;
                        let data = serde_json::to_value(&stored).unwrap_or_default();
                        log.record(c, session_event("session.closed", &stored, data)).map(|_| ())
                    })
                    .await?;
                Ok(session)
            }
            .into_actor(self),
        )
    }
}

impl Handler<RenameSession> for SessionKeeper {
    type Result = ResponseActFuture<Self, Result<Session, KeeperError>>;

    fn handle(&mut self, msg: RenameSession, _: &mut Self::Context) -> Self::Result {
        let title = msg.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > 200 {
            return Box::pin(fut::ready(Err(KeeperError::Invalid("title must be 1 to 200 characters".into()))));
        }
        let session_id = msg.session_id;
        let store = self.store.clone();
        let open_copy = self.open.get_mut(&session_id).map(|open| {
            open.session.title = title.clone();
            open.session.updated_at = now();
            open.session.clone()
        });
        Box::pin(
            async move {
                let mut session = match open_copy {
                    Some(session) => session,
                    None => store
                        .read("get session", move |c| rows::get(c, session_id))
                        .await?
                        .ok_or(KeeperError::NotFound(session_id))?,
                };
                session.title = title;
                let stored = session.clone();
                store.write("rename session", move |c| rows::update(c, &stored)).await?;
                Ok(session)
            }
            .into_actor(self),
        )
    }
}
