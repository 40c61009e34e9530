//! `Client`: a typed HTTP client for the warden API, used by the CLI (and usable by
//! scripts and tests). Errors keep the problem+json body the daemon sent.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::home::Home;

/// An API error as the daemon reported it, or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{detail} ({code})")]
    Problem { status: StatusCode, code: String, detail: String, body: serde_json::Value },
    #[error("cannot reach warden at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("unexpected answer from warden: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Problem { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A connection to one daemon.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    /// Sent as `X-Warden-Client`: who is answering approvals.
    name: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("token", &"<hidden>").finish()
    }
}

impl Client {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        Client { base: base.into().trim_end_matches('/').to_owned(), token: token.into(), http, name: None }
    }

    /// Names this client in `X-Warden-Client` (recorded as who decided an approval).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The daemon of a data dir, unless `url`/`token` say otherwise.
    pub fn discover(home: &Home, url: Option<String>, token: Option<String>) -> anyhow::Result<Client> {
        let url = match url {
            Some(url) => url,
            None => home.read_server_info()?.url,
        };
        let token = match token {
            Some(token) => token,
            None => home.read_token()?,
        };
        Ok(Client::new(url, token))
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// The web dashboard, with the token in the fragment (which browsers never send).
    pub fn dashboard_url(&self) -> String {
        format!("{}/#token={}", self.base, self.token)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// A GET whose answer is text (a diff), not JSON.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let request = self.http.get(format!("{}{}", self.base, path)).bearer_auth(&self.token);
        let response =
            request.send().await.map_err(|source| ClientError::Unreachable { url: self.base.clone(), source })?;
        if !response.status().is_success() {
            return decode::<serde_json::Value>(response).await.map(|_| String::new());
        }
        response.text().await.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /health` without the token: is anything answering?
    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/health", self.base);
        let response = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url: self.base.clone(), source })?;
        decode(response).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.token);
        if let Some(name) = &self.name {
            request = request.header("X-Warden-Client", name);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response =
            request.send().await.map_err(|source| ClientError::Unreachable { url: self.base.clone(), source })?;
        decode(response).await
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseMessage {
    pub id: Option<u64>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    pub data: String,
}

/// Reads server-sent events from a response body.
pub struct SseStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    pending: std::collections::VecDeque<SseMessage>,
}

impl SseStream {
    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<SseMessage>, ClientError> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Ok(Some(message));
            }
            match self.response.chunk().await.map_err(|e| ClientError::Protocol(e.to_string()))? {
                Some(chunk) => {
                    self.buffer.extend_from_slice(&chunk);
                    self.parse();
                }
                None => return Ok(None),
            }
        }
    }

    /// Moves every complete event (ended by a blank line) from the buffer to `pending`.
    fn parse(&mut self) {
        while let Some(end) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end.0).collect();
            self.buffer.drain(..end.1 - end.0);
            let text = String::from_utf8_lossy(&block);
            let mut message = SseMessage { event: "message".into(), ..Default::default() };
            let mut data: Vec<&str> = Vec::new();
            let mut any_field = false;
            for line in text.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) =
                    line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
                any_field = true;
                match field {
                    "id" => message.id = value.trim().parse().ok(),
                    "event" => message.event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if any_field {
                message.data = data.join("\n");
                self.pending.push_back(message);
            }
        }
    }
}

/// Where the first blank line is: (start of the separator, end of it).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2))
}

impl Client {
    /// Stored events of `topics` (and one execution, if given) with
    /// `from_seq <= seq <= to_seq`: what a `skipped` notice says a client missed.
    pub async fn events_between(
        &self,
        topics: &str,
        execution_id: Option<i64>,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Vec<crate::domain::Envelope>, ClientError> {
        let mut events = Vec::new();
        let mut after = from_seq.saturating_sub(1);
        let narrow = execution_id.map(|id| format!("&execution_id={id}")).unwrap_or_default();
        loop {
            let wanted = (to_seq.saturating_sub(after) as usize).clamp(1, crate::domain::HISTORY_PAGE_MAX);
            let path = format!("/api/v1/events/history?topics={topics}{narrow}&since={after}&limit={wanted}");
            let page: crate::domain::Page<crate::domain::Envelope> = self.get(&path).await?;
            let Some(last) = page.items.last().map(|e| e.seq) else { return Ok(events) };
            events.extend(page.items.into_iter().filter(|e| e.seq <= to_seq));
            if last >= to_seq || page.next_cursor.is_none() {
                return Ok(events);
            }
            after = last;
        }
    }

    /// Opens an SSE stream, resuming after `last_event_id` when given.
    pub async fn sse(&self, path: &str, last_event_id: Option<u64>) -> Result<SseStream, ClientError> {
        let mut request = self.http.get(format!("{}{}", self.base, path)).bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response =
            request.send().await.map_err(|source| ClientError::Unreachable { url: self.base.clone(), source })?;
        if !response.status().is_success() {
            return Err(decode::<serde_json::Value>(response)
                .await
                .err()
                .unwrap_or_else(|| ClientError::Protocol("an error status with a success body".into())));
        }
        Ok(SseStream { response, buffer: Vec::new(), pending: Default::default() })
    }
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, ClientError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("{e} in {status} reply")));
    }
    let body: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::json!({ "detail": String::from_utf8_lossy(&bytes), "code": "unknown" }));
    Err(ClientError::Problem {
        status,
        code: body["code"].as_str().unwrap_or("unknown").to_owned(),
        detail: body["detail"].as_str().unwrap_or("no detail").to_owned(),
        body,
    })
}
