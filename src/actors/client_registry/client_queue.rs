//! `ClientQueue`: what one live client (WebSocket or SSE) has been sent but not yet
//! written to its socket, counted in bytes, with the backpressure policy: over 64 KiB
//! low-priority events are skipped (and counted), under 16 KiB the client is told how
//! many it missed, past 4 MiB it is disconnected. The ClientRegistry offers events
//! without ever waiting; the client's writer drains the queue and reports bytes sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::domain::{Event, Priority};

pub use crate::config::FlowLimits;

/// How a client's frames are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

/// One item for the client's writer.
#[derive(Debug)]
pub enum Outbound {
    Event(Arc<Event>),
    /// A protocol message (hello, errors, answers): never skipped.
    Text(String),
    /// Low-priority events were skipped from `from_seq` to `to_seq`.
    Skipped {
        count: u64,
        from_seq: u64,
        to_seq: u64,
    },
    /// A replay crossed events that retention removed: the `{"type":"pruned",…}` notice
    /// (never skipped; SSE `event: pruned`).
    Pruned(String),
    /// SSE execution streams: the execution is final (its JSON); the stream ends.
    End(String),
    /// Close the connection with this reason.
    Close(String),
}

impl Outbound {
    /// The `{"type":"skipped",…}` notice's JSON.
    pub fn skipped_json(count: u64, from_seq: u64, to_seq: u64) -> String {
        serde_json::json!({ "type": "skipped", "count": count, "from_seq": from_seq, "to_seq": to_seq }).to_string()
    }

    /// The item as SSE bytes (`None` for a close, which ends the stream).
    pub fn sse_bytes(&self) -> Option<Bytes> {
        match self {
            Outbound::Event(event) => Some(event.sse_frame()),
            Outbound::Text(text) => Some(sse_frame(None, text)),
            Outbound::Skipped { count, from_seq, to_seq } => {
                Some(sse_frame(Some("skipped"), &Outbound::skipped_json(*count, *from_seq, *to_seq)))
            }
            Outbound::Pruned(json) => Some(sse_frame(Some("pruned"), json)),
            Outbound::End(json) => Some(sse_frame(Some("end"), json)),
            Outbound::Close(_) => None,
        }
    }

    /// Bytes the item takes on a transport's wire.
    fn wire_len(&self, transport: Transport) -> usize {
        match (transport, self) {
            (Transport::Sse, item) => item.sse_bytes().map_or(0, |b| b.len()),
            (Transport::WebSocket, Outbound::Event(event)) => ws_frame_len(event.ws_frame().len()),
            (Transport::WebSocket, Outbound::Text(text) | Outbound::Pruned(text)) => ws_frame_len(text.len()),
            (Transport::WebSocket, Outbound::Skipped { count, from_seq, to_seq }) => {
                ws_frame_len(Outbound::skipped_json(*count, *from_seq, *to_seq).len())
            }
            (Transport::WebSocket, Outbound::End(_) | Outbound::Close(_)) => 0,
        }
    }
}

/// An SSE event: optional `event:` line, one `data:` line per line of `data`.
pub fn sse_frame(kind: Option<&str>, data: &str) -> Bytes {
    let mut frame = String::with_capacity(data.len() + 32);
    if let Some(kind) = kind {
        frame.push_str("event: ");
        frame.push_str(kind);
        frame.push('\n');
    }
    for line in data.split('\n') {
        frame.push_str("data: ");
        frame.push_str(line);
        frame.push('\n');
    }
    frame.push('\n');
    Bytes::from(frame)
}

/// Bytes a server text frame of `payload` bytes takes on the wire (unmasked header).
pub fn ws_frame_len(payload: usize) -> usize {
    payload
        + match payload {
            0..=125 => 2,
            126..=65535 => 4,
            _ => 10,
        }
}

#[derive(Debug, Default)]
struct Flow {
    /// While a replay runs, live events wait here (they come after the replay).
    held: Option<Vec<Arc<Event>>>,
    held_bytes: usize,
    congested: bool,
    skipped: u64,
    skipped_from: u64,
    skipped_to: u64,
    closed: bool,
}

/// What `offer` did with an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    Queued,
    Held,
    Skipped,
    /// The client is gone or was just disconnected.
    Gone,
}

pub struct ClientQueue {
    transport: Transport,
    limits: FlowLimits,
    tx: mpsc::UnboundedSender<Outbound>,
    /// Bytes queued and not yet handed to the socket writer.
    queued: AtomicUsize,
    flow: Mutex<Flow>,
    /// Wakes a replay waiting for the client to drain.
    drained: Notify,
}

impl ClientQueue {
    pub fn new(transport: Transport, limits: FlowLimits) -> (Arc<ClientQueue>, mpsc::UnboundedReceiver<Outbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = ClientQueue {
            transport,
            limits,
            tx,
            queued: AtomicUsize::new(0),
            flow: Mutex::new(Flow::default()),
            drained: Notify::new(),
        };
        (Arc::new(queue), rx)
    }

    fn flow(&self) -> MutexGuard<'_, Flow> {
        // A poisoned lock only means a panic elsewhere; the counters are still usable.
        self.flow.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.flow().closed
    }

    /// The size of an event's frame on this client's wire.
    fn frame_len(&self, event: &Arc<Event>) -> usize {
        Outbound::Event(event.clone()).wire_len(self.transport)
    }

    /// A live event from the registry. Never waits.
    pub fn offer(&self, event: &Arc<Event>) -> Offered {
        let mut flow = self.flow();
        if flow.closed {
            return Offered::Gone;
        }
        if let Some(held) = flow.held.as_mut() {
            held.push(event.clone());
            flow.held_bytes += self.frame_len(event);
            if flow.held_bytes > self.limits.hard_cap {
                self.close_locked(&mut flow, "the client fell too far behind while catching up");
                return Offered::Gone;
            }
            return Offered::Held;
        }
        self.push_live(&mut flow, event)
    }

    fn push_live(&self, flow: &mut Flow, event: &Arc<Event>) -> Offered {
        let queued = self.queued_bytes();
        if queued > self.limits.hard_cap {
            self.close_locked(flow, "the client stopped reading: its send queue passed 4 MiB");
            return Offered::Gone;
        }
        if flow.congested && queued < self.limits.low_water {
            self.recover_locked(flow);
        }
        if !flow.congested && queued > self.limits.high_water {
            flow.congested = true;
        }
        if flow.congested && event.priority == Priority::Low {
            if flow.skipped == 0 {
                flow.skipped_from = event.seq;
            }
            flow.skipped += 1;
            flow.skipped_to = event.seq;
            return Offered::Skipped;
        }
        // A gap is announced before anything that comes after it, so a client never
        // sees a later event (say, execution.finished) before learning what it missed.
        self.announce_skipped(flow);
        self.send(Outbound::Event(event.clone()), self.frame_len(event));
        Offered::Queued
    }

    /// A replayed event: never skipped (the replay waits for the client instead).
    pub fn push_replayed(&self, event: &Arc<Event>) {
        self.send(Outbound::Event(event.clone()), self.frame_len(event));
    }

    /// A protocol message: never skipped.
    pub fn push_text(&self, text: String) {
        self.push(Outbound::Text(text));
    }

    /// A pruned range met by a replay: never skipped.
    pub fn push_pruned(&self, notice_json: String) {
        self.push(Outbound::Pruned(notice_json));
    }

    /// The end of an execution stream.
    pub fn push_end(&self, execution_json: String) {
        self.push(Outbound::End(execution_json));
    }

    fn push(&self, item: Outbound) {
        let len = item.wire_len(self.transport);
        self.send(item, len);
    }

    fn send(&self, item: Outbound, len: usize) {
        self.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(item).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// The writer handed `n` bytes to the socket.
    pub fn sent(&self, n: usize) {
        let before = self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(n)));
        let now = before.unwrap_or(0).saturating_sub(n);
        if now < self.limits.high_water {
            self.drained.notify_waiters();
        }
        if now < self.limits.low_water {
            let mut flow = self.flow();
            if flow.congested && !flow.closed {
                self.recover_locked(&mut flow);
            }
        }
    }

    fn recover_locked(&self, flow: &mut Flow) {
        flow.congested = false;
        self.announce_skipped(flow);
    }

    fn announce_skipped(&self, flow: &mut Flow) {
        if flow.skipped > 0 {
            let item = Outbound::Skipped { count: flow.skipped, from_seq: flow.skipped_from, to_seq: flow.skipped_to };
            flow.skipped = 0;
            self.push(item);
        }
    }

    /// Waits until the client has drained below the high-water mark (for replays).
    pub async fn wait_for_room(&self) {
        loop {
            let notified = self.drained.notified();
            if self.queued_bytes() < self.limits.high_water || self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Holds live events back while a replay runs.
    pub fn hold(&self) {
        let mut flow = self.flow();
        if flow.held.is_none() {
            flow.held = Some(Vec::new());
            flow.held_bytes = 0;
        }
    }

    /// The replay is done: what was held goes out, except what the replay already sent.
    pub fn release(&self, replayed_up_to: u64) {
        let mut flow = self.flow();
        let held = flow.held.take().unwrap_or_default();
        flow.held_bytes = 0;
        for event in held.iter().filter(|e| e.seq > replayed_up_to) {
            if self.push_live(&mut flow, event) == Offered::Gone {
                break;
            }
        }
    }

    /// Disconnects the client with a reason (sent as the close frame).
    pub fn close(&self, reason: &str) {
        let mut flow = self.flow();
        self.close_locked(&mut flow, reason);
    }

    fn close_locked(&self, flow: &mut Flow, reason: &str) {
        if !flow.closed {
            flow.closed = true;
            tracing::info!(reason, "disconnecting a live client");
            let _ = self.tx.send(Outbound::Close(reason.to_owned()));
            self.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Envelope, ExecutionId};

    fn event(seq: u64, kind: &str) -> Arc<Event> {
        Arc::new(Event::from_envelope(&Envelope {
            seq,
            ts: chrono::Utc::now(),
            kind: kind.into(),
            priority: Priority::of(kind),
            execution_id: Some(ExecutionId(1)),
            approval_id: None,
            session_id: None,
            workspace: None,
            data: serde_json::json!({"text": "x".repeat(1000)}),
        }))
    }

    fn small() -> FlowLimits {
        FlowLimits { high_water: 10_000, low_water: 3_000, hard_cap: 50_000 }
    }

    #[test]
    fn a_congested_client_skips_low_events_only_and_hears_of_it() {
        let (queue, mut rx) = ClientQueue::new(Transport::Sse, small());
        let mut seq = 0;
        while queue.queued_bytes() <= 10_000 {
            seq += 1;
            assert_eq!(queue.offer(&event(seq, "execution.output")), Offered::Queued);
        }
        seq += 1;
        assert_eq!(queue.offer(&event(seq, "execution.output")), Offered::Skipped);
        assert_eq!(queue.offer(&event(seq + 1, "execution.output")), Offered::Skipped);
        assert_eq!(queue.offer(&event(seq + 2, "approval.requested")), Offered::Queued, "high is never skipped");
        assert_eq!(queue.offer(&event(seq + 3, "execution.output")), Offered::Skipped);
        assert_eq!(queue.offer(&event(seq + 4, "execution.finished")), Offered::Queued, "normal is never skipped");
        // The writer drains everything. Each gap was announced before the event after
        // it; the client recovers below the low-water mark.
        let mut notices = Vec::new();
        while let Ok(item) = rx.try_recv() {
            match &item {
                Outbound::Event(e) => queue.sent(e.sse_frame().len()),
                Outbound::Skipped { count, from_seq, to_seq } => notices.push((*count, *from_seq, *to_seq)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(notices, vec![(2, seq, seq + 1), (1, seq + 3, seq + 3)]);
        // Notices were counted when queued and never "sent" here.
        let notice_bytes = Outbound::Skipped { count: 2, from_seq: seq, to_seq: seq + 1 }.wire_len(Transport::Sse)
            + Outbound::Skipped { count: 1, from_seq: seq + 3, to_seq: seq + 3 }.wire_len(Transport::Sse);
        assert_eq!(queue.queued_bytes(), notice_bytes);
        assert_eq!(queue.offer(&event(seq + 5, "execution.output")), Offered::Queued);
    }

    #[test]
    fn past_the_hard_cap_the_client_is_disconnected() {
        let (queue, mut rx) = ClientQueue::new(Transport::Sse, small());
        let mut seq = 0;
        loop {
            seq += 1;
            if queue.offer(&event(seq, "execution.started")) == Offered::Gone {
                break;
            }
            assert!(seq < 1000);
        }
        assert!(queue.is_closed());
        let mut closed = false;
        while let Ok(item) = rx.try_recv() {
            closed |= matches!(item, Outbound::Close(_));
        }
        assert!(closed);
        assert_eq!(queue.offer(&event(seq + 1, "approval.requested")), Offered::Gone);
    }

    #[test]
    fn held_events_follow_the_replay_without_duplicates() {
        let (queue, mut rx) = ClientQueue::new(Transport::WebSocket, FlowLimits::default());
        queue.hold();
        assert_eq!(queue.offer(&event(5, "execution.started")), Offered::Held);
        assert_eq!(queue.offer(&event(6, "execution.started")), Offered::Held);
        queue.push_replayed(&event(4, "execution.created"));
        queue.push_replayed(&event(5, "execution.started"));
        queue.release(5);
        let seqs: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|item| match item {
                Outbound::Event(e) => Some(e.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![4, 5, 6]);
    }
}
