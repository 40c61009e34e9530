//! `ClientRegistry` knows every connected live client (WebSocket clients and SSE
//! streams) and its filter, enforces `server.max_clients`, and fans each committed
//! event out to the clients that want it, in `seq` order, without ever waiting for one
//! ([`client_queue`] holds each client's backpressure). The store's writer delivers
//! committed events here; the HTTP layer reserves, attaches and detaches clients.

pub mod client_queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use crate::domain::{Event, EventFilter};
use crate::store::{events as log, retention, Store, StoreError};
pub use client_queue::{ClientQueue, FlowLimits, Offered, Outbound, Transport};

/// A connected client's id, unique for the daemon's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// The client limit is reached.
#[derive(Debug, thiserror::Error)]
#[error("{max} live clients are connected already (server.max_clients)")]
pub struct TooManyClients {
    pub max: u32,
}

/// Take a client slot before upgrading or streaming; refused at the limit.
#[derive(Message, Debug)]
#[rtype(result = "Result<Reservation, TooManyClients>")]
pub struct Reserve;

/// A client slot, and the last `seq` delivered when it was taken.
#[derive(Debug, Clone, Copy)]
pub struct Reservation {
    pub id: ClientId,
    pub last_seq: u64,
}

/// Start (or change) what a client receives. Replies with the last `seq` delivered so
/// far: events up to it are in the log (replay them), later ones come live.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Attach {
    pub id: ClientId,
    pub filter: EventFilter,
    pub queue: Arc<ClientQueue>,
}

/// A client left; its slot is free.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Detach {
    pub id: ClientId,
}

/// Committed events, in `seq` order (from the store's writer).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    pub events: Vec<Arc<Event>>,
}

/// The most committed events waiting for the registry before the store's writer waits
/// for it: under a flood the writer slows down instead of queueing without bound.
pub const MAX_UNDELIVERED: usize = 50_000;

/// Hands committed events to the registry, making the writer wait while the registry is
/// `MAX_UNDELIVERED` events behind. Runs on the writer thread.
pub fn event_sink(registry: Addr<ClientRegistry>, undelivered: Arc<AtomicUsize>) -> crate::store::EventSink {
    Box::new(move |events| {
        while undelivered.load(Ordering::Acquire) > MAX_UNDELIVERED {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        undelivered.fetch_add(events.len(), Ordering::AcqRel);
        registry.do_send(Deliver { events });
    })
}

/// How many live clients are connected, and the limit.
#[derive(Message, Debug)]
#[rtype(result = "ClientCounts")]
pub struct CountClients;

#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct ClientCounts {
    pub connected: usize,
    pub max: u32,
    /// Events published since the daemon started.
    pub events_published: u64,
    /// Low-priority events skipped for congested clients.
    pub events_skipped: u64,
    /// Clients disconnected for falling too far behind.
    pub clients_dropped: u64,
}

struct Client {
    filter: Option<EventFilter>,
    queue: Option<Arc<ClientQueue>>,
}

/// The actor.
pub struct ClientRegistry {
    /// Most clients connected at once; the next one is refused.
    max_clients: u32,
    /// Reserved and attached clients.
    clients: HashMap<ClientId, Client>,
    next_id: u64,
    /// The last `seq` fanned out (everything up to it is committed and delivered).
    last_seq: u64,
    events_published: u64,
    events_skipped: u64,
    clients_dropped: u64,
    /// Events handed over by the writer and not yet fanned out (see `event_sink`).
    undelivered: Arc<AtomicUsize>,
}

impl ClientRegistry {
    /// Starts from the last `seq` in the log, so `seq` continues across restarts.
    pub fn new(max_clients: u32, last_seq: u64, undelivered: Arc<AtomicUsize>) -> Self {
        ClientRegistry {
            undelivered,
            max_clients,
            clients: HashMap::new(),
            next_id: 1,
            last_seq,
            events_published: 0,
            events_skipped: 0,
            clients_dropped: 0,
        }
    }

    /// The last seq in a store's log.
    pub async fn last_seq_in(store: &Store) -> Result<u64, StoreError> {
        store.read("read last seq", log::last_seq).await
    }
}

impl Actor for ClientRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
    }
}

impl Handler<Reserve> for ClientRegistry {
    type Result = Result<Reservation, TooManyClients>;

    fn handle(&mut self, _: Reserve, _: &mut Self::Context) -> Self::Result {
        if self.clients.len() >= self.max_clients as usize {
            return Err(TooManyClients { max: self.max_clients });
        }
        let id = ClientId(self.next_id);
        self.next_id += 1;
        self.clients.insert(id, Client { filter: None, queue: None });
        tracing::debug!(client = %id, connected = self.clients.len(), "client connected");
        Ok(Reservation { id, last_seq: self.last_seq })
    }
}

impl Handler<Attach> for ClientRegistry {
    type Result = u64;

    fn handle(&mut self, msg: Attach, _: &mut Self::Context) -> u64 {
        if let Some(client) = self.clients.get_mut(&msg.id) {
            client.filter = Some(msg.filter);
            client.queue = Some(msg.queue);
        }
        self.last_seq
    }
}

impl Handler<Detach> for ClientRegistry {
    type Result = ();

    fn handle(&mut self, msg: Detach, _: &mut Self::Context) {
        if self.clients.remove(&msg.id).is_some() {
            tracing::debug!(client = %msg.id, connected = self.clients.len(), "client left");
        }
    }
}

impl Handler<Deliver> for ClientRegistry {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        self.undelivered.fetch_sub(msg.events.len(), Ordering::AcqRel);
        for event in &msg.events {
            self.last_seq = self.last_seq.max(event.seq);
            self.events_published += 1;
            for client in self.clients.values_mut() {
                let (Some(filter), Some(queue)) = (&client.filter, &client.queue) else { continue };
                if !filter.matches(event) {
                    continue;
                }
                match queue.offer(event) {
                    Offered::Skipped => self.events_skipped += 1,
                    Offered::Gone => {
                        // The client is being disconnected; it detaches when its
                        // connection ends. Deliver nothing more to it meanwhile.
                        self.clients_dropped += 1;
                        client.filter = None;
                    }
                    Offered::Queued | Offered::Held => {}
                }
            }
        }
    }
}

impl Handler<CountClients> for ClientRegistry {
    type Result = MessageResult<CountClients>;

    fn handle(&mut self, _: CountClients, _: &mut Self::Context) -> Self::Result {
        MessageResult(ClientCounts {
            connected: self.clients.len(),
            max: self.max_clients,
            events_published: self.events_published,
            events_skipped: self.events_skipped,
            clients_dropped: self.clients_dropped,
        })
    }
}

/// Subscribes a client: holds live events, attaches the filter, replays what the log
/// has after `since` up to the attach point, then lets the held live events follow.
/// No event is lost or sent twice across the switch.
pub async fn subscribe(
    registry: &Addr<ClientRegistry>,
    store: &Store,
    id: ClientId,
    queue: &Arc<ClientQueue>,
    filter: EventFilter,
    since: Option<u64>,
) -> Result<(), StoreError> {
    let up_to = attach(registry, id, queue, filter.clone()).await?;
    replay(store, queue, filter, since, up_to).await
}

/// The first half of [`subscribe`]: from its answer on, every event committed for the
/// filter reaches the client (held until [`replay`] releases them). Returns the last seq
/// committed before.
pub async fn attach(
    registry: &Addr<ClientRegistry>,
    id: ClientId,
    queue: &Arc<ClientQueue>,
    filter: EventFilter,
) -> Result<u64, StoreError> {
    queue.hold();
    registry.send(Attach { id, filter, queue: queue.clone() }).await.map_err(|_| StoreError::Closed)
}

/// The second half of [`subscribe`]: replays the log after `since` up to `up_to` (the
/// attach point), then lets the held live events follow.
pub async fn replay(
    store: &Store,
    queue: &Arc<ClientQueue>,
    filter: EventFilter,
    since: Option<u64>,
    up_to: u64,
) -> Result<(), StoreError> {
    let mut after = since.unwrap_or(up_to);
    // Ranges retention removed are told where the replay reaches them.
    let mut pruned = if after < up_to {
        let (filter, from) = (filter.clone(), after);
        store.read("find pruned ranges", move |c| retention::ranges(c, &filter, from, up_to)).await?
    } else {
        Vec::new()
    }
    .into_iter()
    .peekable();
    while after < up_to && !queue.is_closed() {
        queue.wait_for_room().await;
        let page_filter = filter.clone();
        let page = store.read("replay events", move |c| log::replay(c, &page_filter, after, up_to, 500)).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in &page {
            while let Some(range) = pruned.next_if(|range| range.from_seq <= event.seq) {
                queue.push_pruned(range.notice_json());
            }
            queue.push_replayed(event);
        }
    }
    for range in pruned {
        queue.push_pruned(range.notice_json());
    }
    queue.release(up_to);
    Ok(())
}
