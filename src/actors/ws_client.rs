//! `WsClient`: one per WebSocket client. It reads the client's messages (subscribe,
//! unsubscribe, …), runs the heartbeat over its actix-ws session (pings and pongs) and
//! detaches from the ClientRegistry when it stops. [`WsBody`], the response body,
//! frames the client's `ClientQueue`. `http::events` starts both after the upgrade.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use actix::prelude::*;
use actix_http::ws::{OpCode, Parser};
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use actix_ws::{CloseCode, CloseReason, Message, ProtocolError};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::approval_arbiter::{ApprovalArbiter, ArbiterError, Decide};
use super::client_registry::{self, Attach, ClientId, ClientQueue, ClientRegistry, Detach, Outbound};
use crate::domain::SessionId;
use crate::domain::{ApprovalId, Decision, EventFilter, ExecutionId};
use crate::store::Store;

pub use crate::config::Heartbeat;

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
        session_id: Option<SessionId>,
        #[serde(default)]
        since: Option<u64>,
    },
    /// Stop receiving these topics.
    Unsubscribe { topics: Vec<String> },
    /// Answer an approval; the reply says whether this answer won.
    Decide {
        approval_id: ApprovalId,
        decision: Decision,
        #[serde(default)]
        reason: Option<String>,
    },
}

/// The actor.
pub struct WsClient {
    id: ClientId,
    registry: Addr<ClientRegistry>,
    /// Decisions sent over this socket go here.
    arbiter: Addr<ApprovalArbiter>,
    store: Store,
    queue: Arc<ClientQueue>,
    /// Pings and pongs only: the client's queue goes out through [`WsBody`].
    session: actix_ws::Session,
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
pub struct WsClientParts {
    pub id: ClientId,
    pub last_seq: u64,
    pub registry: Addr<ClientRegistry>,
    pub arbiter: Addr<ApprovalArbiter>,
    pub store: Store,
    pub heartbeat: Heartbeat,
    pub queue: Arc<ClientQueue>,
    pub session: actix_ws::Session,
    pub stream: actix_ws::MessageStream,
}

impl WsClient {
    pub fn start(parts: WsClientParts) -> Addr<WsClient> {
        let WsClientParts { id, last_seq, registry, arbiter, store, heartbeat, queue, session, stream } = parts;
        WsClient::create(move |ctx| {
            ctx.add_stream(stream.max_frame_size(1 << 20));
            WsClient {
                id,
                registry,
                arbiter,
                store,
                queue,
                session,
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
                    async move { client_registry::subscribe(&registry, &store, id, &queue, filter, since).await };
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
                // Only the owner's token opens a WebSocket.
                let decided_by = format!("owner via ws:{}", self.id);
                let decide = Decide { id: approval_id, decision, reason, decided_by };
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
    approval_id: ApprovalId,
    won: bool,
    approval: &'a crate::domain::Approval,
}

impl Actor for WsClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
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

impl StreamHandler<Result<Message, ProtocolError>> for WsClient {
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

/// The most bytes one poll of the body frames before handing them on, so one busy client
/// gets a share of its worker and its counted queue shrinks in steps.
const FRAMED_PER_POLL: usize = 64 * 1024;

/// The WebSocket response body. It frames the client's queue itself, as many items as
/// are waiting (up to `FRAMED_PER_POLL`) into one buffer per poll, and tells the queue
/// how many of its bytes actix-http has taken. Pings and pongs the actor sends through
/// its actix-ws session come from `control` (the actix-ws body) between whole frames.
/// The body ends after a close frame; dropping it ends the actix-ws message stream too.
pub struct WsBody<B> {
    control: B,
    outbound: mpsc::UnboundedReceiver<Outbound>,
    queue: Arc<ClientQueue>,
    framed: BytesMut,
    closing: bool,
}

impl<B> WsBody<B> {
    pub fn new(control: B, outbound: mpsc::UnboundedReceiver<Outbound>, queue: Arc<ClientQueue>) -> Self {
        WsBody { control, outbound, queue, framed: BytesMut::new(), closing: false }
    }

    /// Frames what is queued, up to a close.
    fn frame_queued(&mut self, cx: &mut TaskContext<'_>) {
        while !self.closing && self.framed.len() < FRAMED_PER_POLL {
            let Poll::Ready(Some(item)) = self.outbound.poll_recv(cx) else { return };
            let text = |framed: &mut BytesMut, payload: &[u8]| {
                // A server's frames are not masked.
                Parser::write_message(framed, payload, OpCode::Text, true, false)
            };
            match item {
                Outbound::Event(event) => text(&mut self.framed, event.ws_frame().as_bytes()),
                Outbound::Text(message) | Outbound::Pruned(message) => text(&mut self.framed, message.as_bytes()),
                Outbound::Skipped { count, from_seq, to_seq } => {
                    text(&mut self.framed, Outbound::skipped_json(count, from_seq, to_seq).as_bytes())
                }
                Outbound::End(_) => {}
                Outbound::Close(mut reason) => {
                    truncate_at_char(&mut reason, MAX_CLOSE_REASON);
                    let reason = CloseReason { code: CloseCode::Policy, description: Some(reason) };
                    Parser::write_close(&mut self.framed, Some(reason), false);
                    self.closing = true;
                }
            }
        }
    }
}

/// A close frame's payload is at most 125 bytes: the code's two and the reason's.
const MAX_CLOSE_REASON: usize = 123;

fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

impl<B: MessageBody + Unpin> MessageBody for WsBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        // The queue before the control body: polled the other way round, B4's p50 was
        // measurably longer (not explained).
        this.frame_queued(cx);
        // Pings and pongs were never counted in: only the queue's own bytes go out of it.
        let from_queue = this.framed.len();
        if !this.closing {
            match Pin::new(&mut this.control).poll_next(cx) {
                Poll::Ready(Some(Ok(control))) => this.framed.extend_from_slice(&control),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                // The actor and its session are gone.
                Poll::Ready(None) => this.closing = true,
                Poll::Pending => {}
            }
        }
        if !this.framed.is_empty() {
            let framed = this.framed.split().freeze();
            this.queue.sent(from_queue);
            return Poll::Ready(Some(Ok(framed)));
        }
        if this.closing {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::client_registry::{FlowLimits, Transport};

    /// A control body that never yields (the actor sends no ping meanwhile).
    fn silent_control() -> actix_web::body::BodyStream<futures_util::stream::Pending<Result<Bytes, std::io::Error>>> {
        actix_web::body::BodyStream::new(futures_util::stream::pending())
    }

    #[actix::test]
    async fn the_body_frames_the_queue_ends_with_the_close_reason_and_counts_every_byte() {
        let (queue, outbound) = ClientQueue::new(Transport::WebSocket, FlowLimits::default());
        queue.push_text("{\"type\":\"hello\"}".into());
        queue.push_text("x".repeat(300));
        queue.close("the client stopped reading");
        assert!(queue.queued_bytes() > 300);
        let body = WsBody::new(silent_control(), outbound, queue.clone());
        let wire = actix_web::body::to_bytes(body).await.expect("the body ends after the close frame");

        // Unmasked server frames: text (short length), text (16-bit length), close.
        let mut expected = vec![0x81, 16];
        expected.extend_from_slice(b"{\"type\":\"hello\"}");
        expected.extend_from_slice(&[0x81, 126, 1, 44]);
        expected.extend_from_slice("x".repeat(300).as_bytes());
        let reason = b"the client stopped reading";
        expected.extend_from_slice(&[0x88, 2 + reason.len() as u8, 0x03, 0xf0]);
        expected.extend_from_slice(reason);
        assert_eq!(&wire[..], &expected[..]);
        assert_eq!(queue.queued_bytes(), 0, "everything queued was counted out as sent");
    }

    #[test]
    fn a_close_reason_is_cut_to_fit_a_control_frame_without_splitting_a_character() {
        let mut reason = "é".repeat(100);
        truncate_at_char(&mut reason, MAX_CLOSE_REASON);
        assert_eq!(reason.len(), 122);
        let mut short = "fine".to_owned();
        truncate_at_char(&mut short, MAX_CLOSE_REASON);
        assert_eq!(short, "fine");
    }
}
