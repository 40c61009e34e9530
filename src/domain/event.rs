//! Events: every state change, persisted with a `seq` that increases over the daemon's
//! whole life, then delivered to subscribed clients. An event is serialised once; every
//! client gets the same bytes.

use std::sync::OnceLock;

use bytes::Bytes;
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ExecutionId;
use super::SessionId;

/// How much a client wants an event: low ones are skipped for a congested client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    High,
    Normal,
    Low,
}

impl Priority {
    /// `high` for `approval.*` and `daemon.*`, `low` for output lines, `normal` else.
    pub fn of(kind: &str) -> Priority {
        if kind.starts_with("approval.") || kind.starts_with("daemon.") {
            Priority::High
        } else if kind == "execution.output" {
            Priority::Low
        } else {
            Priority::Normal
        }
    }
}

/// An event about to be recorded (its `seq` and `ts` come from the store).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub execution_id: Option<ExecutionId>,
    pub approval_id: Option<super::ApprovalId>,
    pub session_id: Option<SessionId>,
    pub workspace: Option<String>,
    pub data: serde_json::Value,
}

/// The most events one history page holds (a refetch of a skipped range takes few).
pub const HISTORY_PAGE_MAX: usize = 10_000;

impl NewEvent {
    pub fn new(kind: &'static str, data: serde_json::Value) -> Self {
        NewEvent { kind, execution_id: None, approval_id: None, session_id: None, workspace: None, data }
    }

    /// An event about an execution, carrying the whole execution as its data.
    pub fn about_execution(kind: &'static str, execution: &super::Execution) -> Self {
        NewEvent {
            kind,
            execution_id: Some(execution.id),
            approval_id: execution.approval_id,
            session_id: execution.session_id,
            workspace: execution.workspace.clone(),
            data: serde_json::to_value(execution).unwrap_or_default(),
        }
    }

    /// An event about an approval, carrying the whole approval as its data.
    pub fn about_approval(kind: &'static str, approval: &super::Approval) -> Self {
        NewEvent {
            approval_id: Some(approval.id),
            execution_id: approval.execution_id,
            session_id: approval.session_id,
            ..NewEvent::new(kind, serde_json::to_value(approval).unwrap_or_default())
        }
    }
}

/// The JSON form of an event, as clients receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    #[serde(rename = "type")]
    pub kind: String,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub execution_id: Option<ExecutionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub approval_id: Option<super::ApprovalId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    pub data: serde_json::Value,
}

/// A recorded event: what filters look at, and its envelope serialised once.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    /// Borrowed for the types warden records, owned for those read back from the log.
    pub kind: std::borrow::Cow<'static, str>,
    pub priority: Priority,
    pub execution_id: Option<ExecutionId>,
    pub session_id: Option<SessionId>,
    /// The envelope as JSON text, or for an output line its JSON after the `seq`
    /// (rendered with the seq on first use).
    body: Body,
    json: OnceLock<String>,
    ws_frame: OnceLock<ByteString>,
    sse_frame: OnceLock<Bytes>,
}

#[derive(Debug)]
enum Body {
    Json,
    AfterSeq(String),
}

impl Event {
    pub fn from_envelope(envelope: &Envelope) -> Event {
        let json = serde_json::to_string(envelope).unwrap_or_else(|_| "{}".into());
        Event::with_json(envelope, json)
    }

    /// An event read back from the log, with its stored JSON.
    pub fn with_json(envelope: &Envelope, json: String) -> Event {
        Event {
            seq: envelope.seq,
            kind: envelope.kind.clone().into(),
            priority: envelope.priority,
            execution_id: envelope.execution_id,
            session_id: envelope.session_id,
            body: Body::Json,
            json: OnceLock::from(json),
            ws_frame: OnceLock::new(),
            sse_frame: OnceLock::new(),
        }
    }

    /// An `execution.output` event from its envelope's JSON after the `seq` field
    /// (`,"ts":…}`); `seq` may be set until the event is shared.
    pub fn output(seq: u64, execution_id: ExecutionId, session_id: Option<SessionId>, json_after_seq: String) -> Event {
        Event {
            seq,
            kind: std::borrow::Cow::Borrowed("execution.output"),
            priority: Priority::Low,
            execution_id: Some(execution_id),
            session_id,
            body: Body::AfterSeq(json_after_seq),
            json: OnceLock::new(),
            ws_frame: OnceLock::new(),
            sse_frame: OnceLock::new(),
        }
    }

    /// The envelope as JSON text.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| match &self.body {
            Body::AfterSeq(rest) => {
                let mut json = String::with_capacity(rest.len() + 32);
                json.push_str("{\"seq\":");
                json.push_str(&self.seq.to_string());
                json.push_str(rest);
                json
            }
            Body::Json => String::new(),
        })
    }

    /// `{"type":"event","event":{…}}`, built once for all WebSocket clients.
    pub fn ws_frame(&self) -> ByteString {
        self.ws_frame.get_or_init(|| format!("{{\"type\":\"event\",\"event\":{}}}", self.json()).into()).clone()
    }

    /// `id:`, `event:` and `data:` lines, built once for all SSE clients.
    pub fn sse_frame(&self) -> Bytes {
        self.sse_frame
            .get_or_init(|| Bytes::from(format!("id: {}\nevent: {}\ndata: {}\n\n", self.seq, self.kind, self.json())))
            .clone()
    }
}

/// Which events a client wants: types (exact, `prefix.*` or `*`), optionally narrowed to
/// one execution or one session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventFilter {
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub execution_id: Option<ExecutionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
}

impl EventFilter {
    /// Checks the topics are well formed: `*`, `a.b`, or `a.*`.
    pub fn validate(&self) -> Result<(), String> {
        for topic in &self.topics {
            let body = topic.strip_suffix(".*").unwrap_or(topic);
            let ok = topic == "*"
                || (!body.is_empty()
                    && body.len() <= 64
                    && body.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_')
                    && !body.starts_with('.')
                    && !body.ends_with('.'));
            if !ok {
                return Err(format!("topic {topic:?} is not a type, a prefix like execution.* or *"));
            }
        }
        Ok(())
    }

    pub fn topic_matches(&self, kind: &str) -> bool {
        self.topics.iter().any(|topic| {
            topic == "*" || topic == kind || topic.strip_suffix('*').is_some_and(|prefix| kind.starts_with(prefix))
        })
    }

    pub fn matches(&self, event: &Event) -> bool {
        // The ids first: comparing them is cheaper than the topics, and a client following
        // one execution turns down every line of another one's flood.
        self.execution_id.is_none_or(|id| event.execution_id == Some(id))
            && self.session_id.is_none_or(|id| event.session_id == Some(id))
            && self.topic_matches(&event.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, execution: Option<i64>) -> Event {
        Event::from_envelope(&Envelope {
            seq: 1,
            ts: Utc::now(),
            kind: kind.into(),
            priority: Priority::of(kind),
            execution_id: execution.map(ExecutionId),
            approval_id: None,
            session_id: None,
            workspace: None,
            data: serde_json::json!({}),
        })
    }

    #[test]
    fn topics_match_exactly_by_prefix_or_all() {
        let filter = |topics: &[&str]| EventFilter {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        assert!(filter(&["*"]).matches(&event("execution.output", None)));
        assert!(filter(&["execution.*"]).matches(&event("execution.started", None)));
        assert!(!filter(&["approval.*"]).matches(&event("execution.output", None)));
        assert!(filter(&["execution.finished"]).matches(&event("execution.finished", None)));
        assert!(!filter(&["execution.finished"]).matches(&event("execution.finishedx", None)));
        let narrowed = EventFilter { execution_id: Some(ExecutionId(5)), ..filter(&["*"]) };
        assert!(narrowed.matches(&event("execution.output", Some(5))));
        assert!(!narrowed.matches(&event("execution.output", Some(6))));
        assert!(!narrowed.matches(&event("daemon.started", None)));
    }

    #[test]
    fn bad_topics_are_refused() {
        for bad in ["", "Execution.*", "a..*", ".x", "x.", "exec*", "a b"] {
            let filter = EventFilter { topics: vec![bad.into()], ..Default::default() };
            assert!(filter.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn priorities_follow_the_type() {
        assert_eq!(Priority::of("approval.requested"), Priority::High);
        assert_eq!(Priority::of("daemon.stopping"), Priority::High);
        assert_eq!(Priority::of("execution.output"), Priority::Low);
        assert_eq!(Priority::of("execution.started"), Priority::Normal);
    }

    #[test]
    fn frames_are_built_once_from_the_envelope() {
        let e = event("execution.started", Some(3));
        assert!(e.ws_frame().starts_with("{\"type\":\"event\",\"event\":{\"seq\":1"));
        let sse = e.sse_frame();
        assert!(sse.starts_with(b"id: 1\nevent: execution.started\ndata: {"));
        assert!(sse.ends_with(b"\n\n"));
    }
}
