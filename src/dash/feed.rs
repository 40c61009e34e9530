//! The dashboard's link to the daemon: a WebSocket subscribed to every event, opened
//! again with growing pauses after it drops and resumed after the last seq seen, so no
//! event is missed or applied twice. The first connection also fetches the REST
//! snapshot (executions, approvals, providers, status). Runs as its own task and only
//! sends `Feed` messages to the UI loop, which never waits on the network. The channel
//! to the UI is bounded: when the UI falls behind a flood of output, the feed stops
//! reading, the daemon skips output lines for this client and says so, and the UI reads
//! the skipped lines back from the store — the backlog never piles up in the dashboard.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc::Sender;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Client;
use crate::domain::Page;
use crate::domain::{Approval, Envelope, Execution, Provider};

/// What the feed tells the UI.
#[derive(Debug)]
pub enum Feed {
    Live,
    Down {
        attempt: u32,
        error: String,
    },
    Snapshot(Box<Snapshot>),
    Event(Box<Envelope>),
    /// Low-priority events (output lines) were skipped for this slow client.
    Skipped,
}

#[derive(Debug)]
pub struct Snapshot {
    pub executions: Vec<Execution>,
    pub approvals: Vec<Approval>,
    pub providers: Vec<Provider>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Messages in flight from the feed to the UI; beyond this the feed stops reading.
pub const FEED_BACKLOG: usize = 1024;

/// The server messages the dashboard acts on, parsed once from each frame.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage {
    Event {
        event: Box<Envelope>,
    },
    Skipped {},
    #[serde(other)]
    Other,
}

/// Executions the dashboard loads at start (newest first); later ones arrive as events.
const LOADED_EXECUTIONS: usize = 500;

/// Fetches what the dashboard shows before events keep it current.
pub async fn snapshot(client: &Client) -> Result<Snapshot, crate::client::ClientError> {
    let executions: Page<Execution> = client.get(&format!("/api/v1/executions?limit={LOADED_EXECUTIONS}")).await?;
    let approvals: Page<Approval> = client.get("/api/v1/approvals?status=pending&limit=500").await?;
    let providers: Page<Provider> = client.get("/api/v1/providers?limit=500").await?;
    let status: serde_json::Value = client.get("/api/v1/status").await?;
    let started_at = serde_json::from_value(status["started_at"].clone()).ok();
    Ok(Snapshot { executions: executions.items, approvals: approvals.items, providers: providers.items, started_at })
}

/// Connects, subscribes and forwards until the UI goes away.
pub async fn run(client: Client, token: String, to_ui: Sender<Feed>) {
    let ws_url = format!("{}/api/v1/ws", client.base_url().replacen("http", "ws", 1));
    let mut last_seq: Option<u64> = None;
    let mut attempt = 0u32;
    loop {
        let error = match session(&client, &ws_url, &token, &mut last_seq, &to_ui, &mut attempt).await {
            Ok(()) => "the daemon closed the connection".to_owned(),
            Err(e) => e,
        };
        if to_ui.is_closed() {
            return;
        }
        attempt += 1;
        if to_ui.send(Feed::Down { attempt, error }).await.is_err() {
            return;
        }
        // 0.25 s, 0.5 s, 1 s, 2 s, then every 3 s.
        let pause = Duration::from_millis(250u64.saturating_mul(1 << attempt.min(4).saturating_sub(1)))
            .min(Duration::from_secs(3));
        tokio::time::sleep(pause).await;
    }
}

/// One connection: hello, (snapshot on the first), subscribe with `since`, forward.
async fn session(
    client: &Client,
    ws_url: &str,
    token: &str,
    last_seq: &mut Option<u64>,
    to_ui: &Sender<Feed>,
    attempt: &mut u32,
) -> Result<(), String> {
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    let auth = format!("Bearer {token}").parse().map_err(|_| "the token is not a valid header value".to_owned())?;
    request.headers_mut().insert("authorization", auth);
    request.headers_mut().insert("x-warden-client", "warden-dash".parse().expect("a valid header value"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| e.to_string())?;
    let hello = next_json(&mut socket).await?;
    if last_seq.is_none() {
        // Events after the hello's seq are replayed, so the snapshot can only be older
        // than what follows it.
        *last_seq = hello["last_seq"].as_u64();
        let snapshot = snapshot(client).await.map_err(|e| e.to_string())?;
        let _ = to_ui.send(Feed::Snapshot(Box::new(snapshot))).await;
    }
    let subscribe = serde_json::json!({ "type": "subscribe", "topics": ["*"], "since": last_seq.unwrap_or(0) });
    socket.send(Message::text(subscribe.to_string())).await.map_err(|e| e.to_string())?;
    *attempt = 0;
    if to_ui.send(Feed::Live).await.is_err() {
        return Ok(());
    }
    loop {
        let text = next_text(&mut socket).await?;
        let forwarded = match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Event { event }) => {
                *last_seq = Some(event.seq);
                to_ui.send(Feed::Event(event)).await
            }
            Ok(ServerMessage::Skipped {}) => to_ui.send(Feed::Skipped).await,
            Ok(ServerMessage::Other) | Err(_) => continue,
        };
        if forwarded.is_err() {
            return Ok(());
        }
    }
}

async fn next_json<S>(socket: &mut S) -> Result<serde_json::Value, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    serde_json::from_str(&next_text(socket).await?).map_err(|e| e.to_string())
}

async fn next_text<S>(socket: &mut S) -> Result<tokio_tungstenite::tungstenite::Utf8Bytes, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into()))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the connection ended".into()),
        }
    }
}
