//! `WsSession`: one per WebSocket client. It owns the actix-ws session (written by one
//! writer task that drains the client's `ClientQueue`), reads the client's messages
//! (subscribe, unsubscribe, …), runs the heartbeat and detaches from the
//! SessionRegistry when it stops. `http::events` starts it after the upgrade.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use actix_ws::{CloseCode, CloseReason, Message, ProtocolError};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::approval_arbiter::{ApprovalArbiter, ArbiterError, Decide};
use super::session_registry::{self, Attach, ClientId, ClientQueue, Detach, Outbound, SessionRegistry};
use crate::domain::{Decision, EventFilter, ExecutionId};
use crate::store::Store;

/// Liveness settings of live clients.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// How often the server pings a WebSocket client.
    pub ping_interval: Duration,
    /// A client silent for this long (no pong, no frame) is dropped.
    pub client_timeout: Duration,
    /// How often an SSE stream gets a `: keepalive` comment.
    pub sse_keepalive: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            ping_interval: Duration::from_secs(30),
            client_timeout: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
        }
    }
}

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    /// Replace the filter; with `since`, first replay the log after that `seq`.
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        execution_id: Option<i64>,
        #[serde(default)]
        session_id: Option<i64>,
        #[serde(default)]
        since: Option<u64>,
    },
    /// Stop receiving these topics.
    Unsubscribe { topics: Vec<String> },
    /// Answer an approval; the reply says whether this answer won.
    Decide {
        approval_id: i64,
        decision: Decision,
        #[serde(default)]
        reason: Option<String>,
    },
}

/// The actor.
pub struct WsSession {
    id: ClientId,
    registry: Addr<SessionRegistry>,
    /// Decisions sent over this socket go here.
    arbiter: Addr<ApprovalArbiter>,
    store: Store,
    queue: Arc<ClientQueue>,
    /// Written only by the writer task; kept here for pings and pongs.
    session: actix_ws::Session,
    /// Taken by the writer task when the actor starts.
    outbound: Option<mpsc::UnboundedReceiver<Outbound>>,
    heartbeat: Heartbeat,
    /// When the client was last heard from (any frame).
    last_heard: Instant,
    /// The current filter, so `unsubscribe` can narrow it.
    filter: EventFilter,
    /// A subscription being set up (its replay may still run).
    subscribing: Option<SpawnHandle>,
    /// The last seq at connection time, for the hello.
    last_seq: u64,
}

/// Everything a new session needs.
pub struct WsSessionParts {
    pub id: ClientId,
    pub last_seq: u64,
    pub registry: Addr<SessionRegistry>,
    pub arbiter: Addr<ApprovalArbiter>,
    pub store: Store,
    pub heartbeat: Heartbeat,
    pub queue: Arc<ClientQueue>,
    pub outbound: mpsc::UnboundedReceiver<Outbound>,
    pub session: actix_ws::Session,
    pub stream: actix_ws::MessageStream,
}

impl WsSession {
    pub fn start(parts: WsSessionParts) -> Addr<WsSession> {
        let WsSessionParts { id, last_seq, registry, arbiter, store, heartbeat, queue, outbound, session, stream } =
            parts;
        WsSession::create(move |ctx| {
            ctx.add_stream(stream.max_frame_size(1 << 20));
            WsSession {
                id,
                registry,
                arbiter,
                store,
                queue,
                session,
                outbound: Some(outbound),
                heartbeat,
                last_heard: Instant::now(),
                filter: EventFilter::default(),
                subscribing: None,
                last_seq,
            }
        })
    }

    fn error(&self, code: &str, message: impl Into<String>) {
        let text = serde_json::json!({ "type": "error", "code": code, "message": message.into() }).to_string();
        self.queue.push_text(text);
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => return self.error("invalid_message", format!("cannot read that message: {e}")),
        };
        match message {
            ClientMessage::Subscribe { topics, execution_id, session_id, since } => {
                let filter = EventFilter { topics, execution_id: execution_id.map(ExecutionId), session_id };
                if let Err(e) = filter.validate() {
                    return self.error("invalid_topic", e);
                }
                if filter.topics.is_empty() {
                    return self.error("invalid_topic", "subscribe needs at least one topic (\"*\" for all)");
                }
                self.filter = filter.clone();
                if let Some(previous) = self.subscribing.take() {
                    ctx.cancel_future(previous);
                }
                let (registry, store, queue, id) =
                    (self.registry.clone(), self.store.clone(), self.queue.clone(), self.id);
                let setup =
                    async move { session_registry::subscribe(&registry, &store, id, &queue, filter, since).await };
                let handle = ctx.spawn(setup.into_actor(self).map(|result, act, _| {
                    act.subscribing = None;
                    if let Err(e) = result {
                        act.error("replay_failed", e.to_string());
                    }
                }));
                self.subscribing = Some(handle);
            }
            ClientMessage::Unsubscribe { topics } => {
                self.filter.topics.retain(|t| !topics.contains(t));
                self.registry.do_send(Attach { id: self.id, filter: self.filter.clone(), queue: self.queue.clone() });
            }
            ClientMessage::Decide { approval_id, decision, reason } => {
                let decide = Decide { id: approval_id, decision, reason, decided_by: self.id.to_string() };
                let (arbiter, queue) = (self.arbiter.clone(), self.queue.clone());
                // A task of its own, not an item of this actor's context: actix polls
                // every context item on each wake-up, and a client may have thousands of
                // decisions in flight.
                actix::spawn(async move {
                    let (won, approval) = match arbiter.send(decide).await {
                        Ok(Ok(approval)) => (true, approval),
                        Ok(Err(ArbiterError::AlreadyDecided(winner) | ArbiterError::Expired(winner))) => {
                            (false, *winner)
                        }
                        Ok(Err(e)) => {
                            let code =
                                if matches!(e, ArbiterError::NotFound(_)) { "not_found" } else { "decision_failed" };
                            let error = serde_json::json!({ "type": "error", "code": code, "message": e.to_string() });
                            queue.push_text(error.to_string());
                            return;
                        }
                        Err(e) => {
                            let error =
                                serde_json::json!({ "type": "error", "code": "unavailable", "message": e.to_string() });
                            queue.push_text(error.to_string());
                            return;
                        }
                    };
                    let answer = DecisionAnswer { kind: "decision", approval_id, won, approval: &approval };
                    queue.push_text(serde_json::to_string(&answer).unwrap_or_default());
                });
            }
        }
    }
}

/// The reply to a `decide` message.
#[derive(serde::Serialize)]
struct DecisionAnswer<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    approval_id: i64,
    won: bool,
    approval: &'a crate::domain::Approval,
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(outbound) = self.outbound.take() {
            actix::spawn(write_loop(self.session.clone(), outbound));
        }
        let hello = serde_json::json!({ "type": "hello", "client_id": self.id.to_string(), "last_seq": self.last_seq });
        self.queue.push_text(hello.to_string());
        ctx.run_interval(self.heartbeat.ping_interval, |act, ctx| {
            if act.last_heard.elapsed() > act.heartbeat.client_timeout {
                tracing::info!(client = %act.id, "no pong or frame within the timeout: dropping the client");
                act.queue.close("no pong within the heartbeat timeout");
                ctx.stop();
                return;
            }
            let mut session = act.session.clone();
            actix::spawn(async move {
                let _ = session.ping(b"").await;
            });
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.queue.close("the connection ended");
        self.registry.do_send(Detach { id: self.id });
        Running::Stop
    }
}

impl StreamHandler<Result<Message, ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(Message::Text(text)) => self.on_text(&text, ctx),
            Ok(Message::Ping(bytes)) => {
                let mut session = self.session.clone();
                actix::spawn(async move {
                    let _ = session.pong(&bytes).await;
                });
            }
            Ok(Message::Pong(_)) | Ok(Message::Nop) | Ok(Message::Continuation(_)) => {}
            Ok(Message::Binary(_)) => self.error("invalid_message", "send JSON text frames"),
            Ok(Message::Close(_)) => ctx.stop(),
            Err(e) => {
                tracing::debug!(client = %self.id, error = %e, "WebSocket protocol error");
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// Writes the client's queue to the socket, one frame at a time, until the queue ends
/// or says to close.
async fn write_loop(mut session: actix_ws::Session, mut outbound: mpsc::UnboundedReceiver<Outbound>) {
    while let Some(item) = outbound.recv().await {
        let sent = match item {
            Outbound::Event(event) => session.text(event.ws_frame()).await,
            Outbound::Text(text) => session.text(text).await,
            Outbound::Skipped { count, from_seq, to_seq } => {
                session.text(Outbound::skipped_json(count, from_seq, to_seq)).await
            }
            Outbound::End(_) => Ok(()),
            Outbound::Close(reason) => {
                let reason = CloseReason { code: CloseCode::Policy, description: Some(reason) };
                let _ = session.close(Some(reason)).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The WebSocket response body, counting the bytes actix-http takes from it so the
/// client's queue knows what is still waiting.
pub struct CountingBody<B> {
    inner: B,
    queue: Arc<ClientQueue>,
}

impl<B> CountingBody<B> {
    pub fn new(inner: B, queue: Arc<ClientQueue>) -> Self {
        CountingBody { inner, queue }
    }
}

impl<B: MessageBody + Unpin> MessageBody for CountingBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.queue.sent(bytes.len());
        }
        polled
    }
}
