//! Live events over HTTP: `GET /api/v1/ws` (WebSocket, served by a `WsClient` actor),
//! `GET /api/v1/events` (SSE), `GET /api/v1/executions/{id}/stream` (SSE of one
//! execution, ending with `event: end`) and `GET /api/v1/events/history` (JSON pages).
//! Every live client takes a slot from the ClientRegistry first.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::Addr;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;

use super::auth::WS_PROTOCOL;
use super::hangup::hung_up;
use super::problem::{ApiError, Problem};
use crate::actors::approval_arbiter::ApprovalArbiter;
use crate::actors::client_registry::{
    self, ClientId, ClientQueue, ClientRegistry, Detach, FlowLimits, Outbound, Reservation, Reserve, Transport,
};
use crate::actors::execution_monitor::ExecutionReader;
use crate::actors::ws_client::{Heartbeat, WsBody, WsClient, WsClientParts};
use crate::domain::SessionId;
use crate::domain::{Envelope, EventFilter, ExecutionId};
use crate::store::{events as log, retention, Store};

/// What live clients need besides the actors.
#[derive(Clone)]
pub struct LiveSettings {
    pub store: Store,
    pub heartbeat: Heartbeat,
    pub limits: FlowLimits,
}

type Registry = web::Data<Addr<ClientRegistry>>;
type Live = web::Data<LiveSettings>;

/// `?topics=&execution_id=&session_id=&since=` for the event streams.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Comma-separated types: exact (`execution.finished`), prefix (`execution.*`) or `*`
    /// (default).
    #[param(
        pattern = r"^ *$|^ *(\*|[a-z_]([a-z_.]{0,62}[a-z_])?(\.\*)?) *(, *(\*|[a-z_]([a-z_.]{0,62}[a-z_])?(\.\*)?) *)*$"
    )]
    pub topics: Option<String>,
    pub execution_id: Option<i64>,
    #[param(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
    /// Replay stored events after this `seq` first (`Last-Event-ID` overrides it).
    #[param(maximum = 9007199254740991_u64)]
    pub since: Option<u64>,
    /// History pages only: events per page, 1 to 10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

impl EventsQuery {
    fn filter(&self) -> Result<EventFilter, ApiError> {
        let topics: Vec<String> = match &self.topics {
            Some(text) if !text.trim_matches(' ').is_empty() => {
                text.split(',').map(|t| t.trim_matches(' ').to_owned()).collect()
            }
            _ => vec!["*".to_owned()],
        };
        let filter =
            EventFilter { topics, execution_id: self.execution_id.map(ExecutionId), session_id: self.session_id };
        filter.validate().map_err(ApiError::bad_request)?;
        Ok(filter)
    }
}

/// `Last-Event-ID`, which wins over `since`.
fn resume_point(req: &HttpRequest, since: Option<u64>) -> Result<Option<u64>, ApiError> {
    let resume = match req.headers().get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be an event seq (a whole number)"))?,
        None => since,
    };
    resume.map(checked_seq).transpose()
}

pub use crate::domain::HISTORY_PAGE_MAX;

/// The largest seq a client may name: what a JSON number holds exactly (2^53 - 1).
const MAX_SEQ: u64 = (1 << 53) - 1;

fn checked_seq(seq: u64) -> Result<u64, ApiError> {
    if seq > MAX_SEQ {
        return Err(ApiError::bad_request(format!("a seq is at most {MAX_SEQ}, not {seq}")));
    }
    Ok(seq)
}

async fn reserve(registry: &Registry) -> Result<Reservation, ApiError> {
    Ok(registry.send(Reserve).await??)
}

/// The WebSocket: `hello` first, then `subscribe` / `unsubscribe` from the client and
/// `event` / `skipped` / `error` from the server.
#[utoipa::path(get, path = "/api/v1/ws", operation_id = "openWebSocket", tag = "events",
    responses((status = 101, description = "switching to the WebSocket protocol"),
              (status = 400, body = Problem), (status = 503, description = "too many clients", body = Problem)))]
pub async fn ws(
    req: HttpRequest,
    body: web::Payload,
    registry: Registry,
    arbiter: web::Data<Addr<ApprovalArbiter>>,
    live: Live,
) -> Result<HttpResponse, ApiError> {
    let reservation = reserve(&registry).await?;
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(parts) => parts,
        Err(e) => {
            registry.do_send(Detach { id: reservation.id });
            return Err(ApiError::bad_request(format!("not a WebSocket upgrade: {e}")));
        }
    };
    let (queue, outbound) = ClientQueue::new(Transport::WebSocket, live.limits);
    let counted = queue.clone();
    WsClient::start(WsClientParts {
        id: reservation.id,
        last_seq: reservation.last_seq,
        registry: registry.get_ref().clone(),
        arbiter: arbiter.get_ref().clone(),
        store: live.store.clone(),
        heartbeat: live.heartbeat,
        queue,
        session,
        stream,
    });
    let mut response = response.map_body(|_, control| BoxBody::new(WsBody::new(control, outbound, counted)));
    // A browser that sent its token as a subprotocol must get one of its offers back.
    let offered = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|h| h.to_str().ok()).unwrap_or("");
    if offered.split(',').any(|p| p.trim() == WS_PROTOCOL) {
        response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, header::HeaderValue::from_static(WS_PROTOCOL));
    }
    Ok(response)
}

/// Server-sent events: `id:` is the seq, `event:` the type, `data:` the envelope.
#[utoipa::path(get, path = "/api/v1/events", operation_id = "streamEvents", tag = "events", params(EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this seq")),
    responses((status = 200, description = "an event stream", content_type = "text/event-stream"),
              (status = 400, body = Problem), (status = 503, description = "too many clients", body = Problem)))]
pub async fn sse(
    req: HttpRequest,
    query: web::Query<EventsQuery>,
    registry: Registry,
    live: Live,
) -> Result<HttpResponse, ApiError> {
    let filter = query.filter()?;
    let since = resume_point(&req, query.since)?;
    open_stream(&req, &registry, &live, filter, since, None, |_| async {}).await
}

/// One execution as SSE: its stored events (output and status) from `since` (or the
/// start), then live, then `event: end` with the final execution, then the stream ends.
#[utoipa::path(get, path = "/api/v1/executions/{id}/stream", operation_id = "streamExecution", tag = "events", params(("id" = i64, Path),
        ("since" = Option<u64>, Query, description = "resume after this seq"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this seq")),
    responses((status = 200, description = "an event stream", content_type = "text/event-stream"),
              (status = 404, body = Problem), (status = 503, description = "too many clients", body = Problem)))]
pub async fn execution_stream(
    req: HttpRequest,
    id: web::Path<i64>,
    query: web::Query<EventsQuery>,
    reader: web::Data<ExecutionReader>,
    registry: Registry,
    live: Live,
) -> Result<HttpResponse, ApiError> {
    let id = ExecutionId(*id);
    reader.get(id).await?;
    let since = resume_point(&req, query.since)?.unwrap_or(0);
    let filter = EventFilter { topics: vec!["execution.*".into()], execution_id: Some(id), session_id: None };
    let (store, reader) = (live.store.clone(), reader.get_ref().clone());
    open_stream(&req, &registry, &live, filter, Some(since), Some(id), move |queue| async move {
        // Resumed after its end, or its events were pruned: nothing more will come, so
        // end now.
        let finished = store.read("find the finish", move |c| log::finished_seq(c, id)).await.ok().flatten();
        if finished.is_none_or(|seq| seq <= since) {
            if let Ok(execution) = reader.get(id).await {
                if finished.is_some() || execution.pruned_at.is_some() {
                    queue.push_end(serde_json::to_string(&execution).unwrap_or_default());
                }
            }
        }
    })
    .await
}

/// Takes a client slot and answers with an SSE stream of `filter`: the log after
/// `since`, then live events. `after_replay` runs once the stream has gone live. The
/// stream (and its slot) ends as soon as the client hangs up.
async fn open_stream<F, Fut>(
    req: &HttpRequest,
    registry: &Registry,
    live: &LiveSettings,
    filter: EventFilter,
    since: Option<u64>,
    end_after: Option<ExecutionId>,
    after_replay: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(Arc<ClientQueue>) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let reservation = reserve(registry).await?;
    let (queue, outbound) = ClientQueue::new(Transport::Sse, live.limits);
    let mut body =
        SseBody::new(outbound, queue.clone(), live.heartbeat.sse_keepalive, end_after, registry, reservation.id);
    body.hung_up = Some(Box::pin(hung_up(req)));
    // Attached before the answer: whatever happens after a client got its 200 reaches it.
    let up_to = client_registry::attach(registry, reservation.id, &queue, filter.clone()).await?;
    let store = live.store.clone();
    actix::spawn(async move {
        match client_registry::replay(&store, &queue, filter, since, up_to).await {
            Ok(()) => after_replay(queue).await,
            Err(e) => {
                tracing::warn!(error = %e, "SSE replay failed");
                queue.close("replay failed");
            }
        }
    });
    Ok(sse_response(body))
}

fn sse_response(body: SseBody) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .body(body)
}

/// A page of the event history (for the document; the handler writes it directly).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    pub items: Vec<Envelope>,
    /// Pass as `since` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// The ranges in the page's span whose events retention or a deletion removed.
    pub pruned: Vec<crate::domain::PrunedRange>,
}

/// Stored events as JSON pages, for scripts. `pruned` lists the ranges in the page's
/// span whose events retention (or a deletion) removed.
#[utoipa::path(get, path = "/api/v1/events/history", operation_id = "listEventHistory", tag = "events", params(EventsQuery),
    responses((status = 200, description = "`{items: [event envelopes], next_cursor, pruned}`", body = HistoryPage),
              (status = 400, body = Problem)))]
pub async fn history(query: web::Query<EventsQuery>, live: Live) -> Result<HttpResponse, ApiError> {
    let filter = query.filter()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=HISTORY_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {HISTORY_PAGE_MAX}, not {limit}")));
    }
    let after = query.since.map(checked_seq).transpose()?.unwrap_or(0);
    let (page, pruned) = live
        .store
        .read("read event history", move |c| {
            let page = log::replay(c, &filter, after, u64::MAX, limit + 1)?;
            // The page covers seqs up to its last event when another page follows.
            let end = if page.len() > limit { page[limit - 1].seq } else { u64::MAX };
            Ok((page, retention::ranges(c, &filter, after, end)?))
        })
        .await?;
    let more = page.len() > limit;
    let items: Vec<&str> = page.iter().take(limit).map(|e| e.json()).collect();
    let next_cursor = if more { page.get(limit - 1).map(|e| e.seq.to_string()) } else { None };
    let body = format!(
        "{{\"items\":[{}],\"next_cursor\":{},\"pruned\":{}}}",
        items.join(","),
        serde_json::to_string(&next_cursor).unwrap_or_else(|_| "null".into()),
        serde_json::to_string(&pruned).unwrap_or_else(|_| "[]".into())
    );
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// Frees the client's slot when its stream is dropped (the client went away).
struct ClientGuard {
    id: ClientId,
    registry: Addr<ClientRegistry>,
    queue: Arc<ClientQueue>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.queue.close("the stream ended");
        self.registry.do_send(Detach { id: self.id });
    }
}

/// An SSE response body: the client's queue, keep-alive comments, and for an execution
/// stream, `event: end` after its `execution.finished`.
struct SseBody {
    outbound: mpsc::UnboundedReceiver<Outbound>,
    queue: Arc<ClientQueue>,
    keepalive: tokio::time::Interval,
    /// End after this execution's `execution.finished`.
    end_after: Option<ExecutionId>,
    /// Resolves when the client has hung up: the stream ends then, not at its next write.
    hung_up: Option<Pin<Box<dyn std::future::Future<Output = ()>>>>,
    done: bool,
    _guard: ClientGuard,
}

impl SseBody {
    fn new(
        outbound: mpsc::UnboundedReceiver<Outbound>,
        queue: Arc<ClientQueue>,
        keepalive: Duration,
        end_after: Option<ExecutionId>,
        registry: &Registry,
        id: ClientId,
    ) -> Self {
        let keepalive = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        let guard = ClientGuard { id, registry: registry.get_ref().clone(), queue: queue.clone() };
        SseBody { outbound, queue, keepalive, end_after, hung_up: None, done: false, _guard: guard }
    }

    /// The bytes for one queued item; marks the stream done when it ends it.
    fn frame(&mut self, item: Outbound) -> Option<Bytes> {
        let bytes = item.sse_bytes()?;
        self.queue.sent(bytes.len());
        match &item {
            Outbound::End(_) => self.done = true,
            Outbound::Event(event)
                if event.kind == "execution.finished"
                    && event.execution_id.is_some()
                    && event.execution_id == self.end_after =>
            {
                self.done = true;
                let execution = serde_json::from_str::<Envelope>(event.json()).map(|e| e.data).unwrap_or_default();
                let end = Outbound::End(execution.to_string()).sse_bytes().unwrap_or_default();
                return Some([bytes, end].concat().into());
            }
            _ => {}
        }
        Some(bytes)
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.hung_up.as_mut().is_some_and(|gone| gone.as_mut().poll(cx).is_ready()) {
            self.done = true;
            return Poll::Ready(Some(Err(actix_web::error::ErrorGone("the client hung up"))));
        }
        match self.outbound.poll_recv(cx) {
            Poll::Ready(Some(item)) => match self.frame(item) {
                Some(bytes) => Poll::Ready(Some(Ok(bytes))),
                // A close: the stream ends.
                None => Poll::Ready(None),
            },
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.keepalive.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(b": keepalive\n\n")))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl MessageBody for SseBody {
    type Error = actix_web::Error;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Stream::poll_next(self, cx)
    }
}
