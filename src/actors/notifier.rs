//! `Notifier`: tells people what they asked to hear about when nobody is watching a
//! dashboard — a webhook (JSON, signed with HMAC-SHA256 when it has a secret), an
//! ntfy topic (so a phone can be told) or the desktop (`notify-send`, `osascript`).
//! The store's event sink hands it the committed events a target wants (checked by
//! type on the writer thread, so output lines never come here); each target delivers
//! them one at a time in order, with retries and backoff, on tasks of its own, so a
//! receiver that hangs holds only its own queue and never an actor. `warden notify
//! test` sends one to every target and says how each went.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::{EventRule as Rule, NotifyFormat, NotifyTarget};
use crate::domain::Event;

/// Deliveries waiting per target; past this the oldest is dropped (and logged).
const QUEUE_MAX: usize = 1000;
/// How long one delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after the first attempt, waiting 1, 2, 4, 8 and 16 s.
const RETRIES: u32 = 5;

/// Which event types any target wants: checked on the store's writer thread before an
/// event is handed over, so it must be cheap.
#[derive(Clone)]
pub struct Wanted(Arc<Vec<Rule>>);

impl Wanted {
    pub fn any(&self, kind: &str) -> bool {
        kind != "execution.output" && self.0.iter().any(|rule| rule.wants_kind(kind))
    }
}

/// Committed events some target may want.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify {
    pub events: Vec<Arc<Event>>,
}

/// Send one test notification to every target now; how each went.
#[derive(Message, Debug)]
#[rtype(result = "Vec<TestResult>")]
pub struct SendTest;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestResult {
    /// The target, as `notify.label` names it (no secret in it).
    pub target: String,
    pub ok: bool,
    /// What went wrong, or the receiver's status.
    pub detail: String,
}

/// One notification to send: its body and headers, made once.
#[derive(Debug, Clone)]
struct Outgoing {
    kind: String,
    /// The event as JSON (the envelope).
    event: serde_json::Value,
    text: String,
}

struct TargetState {
    target: NotifyTarget,
    rules: Vec<Rule>,
    queue: VecDeque<Outgoing>,
    busy: bool,
}

pub struct Notifier {
    targets: Vec<TargetState>,
    http: reqwest::Client,
}

impl Notifier {
    /// The actor and what its event sink should hand it. Targets were validated with
    /// the config.
    pub fn new(targets: Vec<NotifyTarget>) -> (Notifier, Wanted) {
        let targets: Vec<TargetState> = targets
            .into_iter()
            .map(|target| {
                let rules = target.events.iter().filter_map(|rule| Rule::parse(rule).ok()).collect();
                TargetState { target, rules, queue: VecDeque::new(), busy: false }
            })
            .collect();
        let wanted = Wanted(Arc::new(targets.iter().flat_map(|t| t.rules.clone()).collect()));
        let http = reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build().unwrap_or_default();
        (Notifier { targets, http }, wanted)
    }

    /// Starts the next delivery of a target if none is under way.
    fn pump(&mut self, index: usize, ctx: &mut Context<Self>) {
        let Some(state) = self.targets.get_mut(index) else { return };
        if state.busy {
            return;
        }
        let Some(outgoing) = state.queue.front().cloned() else { return };
        state.busy = true;
        let (target, http) = (state.target.clone(), self.http.clone());
        let delivery = async move {
            let mut attempt = 0;
            loop {
                match deliver(&http, &target, &outgoing).await {
                    Ok(()) => return,
                    Err(Failure::Final(why)) => {
                        tracing::warn!(target = %target.label(), event = %outgoing.kind, %why, "a notification was refused");
                        return;
                    }
                    Err(Failure::Retry(why)) if attempt < RETRIES => {
                        let pause = Duration::from_secs(1 << attempt);
                        tracing::info!(target = %target.label(), %why, retry_in_s = pause.as_secs(), "a notification failed; retrying");
                        tokio::time::sleep(pause).await;
                        attempt += 1;
                    }
                    Err(Failure::Retry(why)) => {
                        tracing::warn!(target = %target.label(), event = %outgoing.kind, %why, "a notification failed {} times; dropped", RETRIES + 1);
                        return;
                    }
                }
            }
        };
        ctx.spawn(delivery.into_actor(self).map(move |(), act, ctx| {
            if let Some(state) = act.targets.get_mut(index) {
                state.queue.pop_front();
                state.busy = false;
            }
            act.pump(index, ctx);
        }));
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

impl Handler<Notify> for Notifier {
    type Result = ();

    fn handle(&mut self, msg: Notify, ctx: &mut Self::Context) {
        for event in msg.events {
            let Ok(envelope) = serde_json::from_str::<serde_json::Value>(event.json()) else { continue };
            let data = &envelope["data"];
            for index in 0..self.targets.len() {
                let state = &mut self.targets[index];
                if !state.rules.iter().any(|rule| rule.matches(&event.kind, data)) {
                    continue;
                }
                if state.queue.len() >= QUEUE_MAX {
                    state.queue.remove(if state.busy { 1 } else { 0 });
                    tracing::warn!(target = %state.target.label(), "notification queue full: the oldest waiting one is dropped");
                }
                let text = describe(&event.kind, data);
                state.queue.push_back(Outgoing { kind: event.kind.to_string(), event: envelope.clone(), text });
                self.pump(index, ctx);
            }
        }
    }
}

impl Handler<SendTest> for Notifier {
    type Result = ResponseFuture<Vec<TestResult>>;

    fn handle(&mut self, _: SendTest, _: &mut Self::Context) -> Self::Result {
        let (targets, http) = (self.targets.iter().map(|t| t.target.clone()).collect::<Vec<_>>(), self.http.clone());
        let outgoing = Outgoing {
            kind: "notify.test".into(),
            event: serde_json::json!({"type": "notify.test", "ts": crate::domain::now(), "data": {}}),
            text: "warden: a test notification (warden notify test)".into(),
        };
        Box::pin(async move {
            let mut results = Vec::new();
            for target in targets {
                let (ok, detail) = match deliver(&http, &target, &outgoing).await {
                    Ok(()) => (true, "delivered".to_owned()),
                    Err(Failure::Final(why) | Failure::Retry(why)) => (false, why),
                };
                results.push(TestResult { target: target.label(), ok, detail });
            }
            results
        })
    }
}

enum Failure {
    /// Worth another try (no answer, a 5xx, 408, 429).
    Retry(String),
    /// Not worth it (another 4xx, a bad target).
    Final(String),
}

async fn deliver(http: &reqwest::Client, target: &NotifyTarget, outgoing: &Outgoing) -> Result<(), Failure> {
    let Some(url) = &target.url else { return desktop(&outgoing.text).await };
    let request = match target.format {
        NotifyFormat::Json => {
            let body = serde_json::to_vec(&serde_json::json!({"event": outgoing.event, "text": outgoing.text}))
                .map_err(|e| Failure::Final(e.to_string()))?;
            let mut request = http.post(url).header("content-type", "application/json");
            if let Some(secret) = &target.secret {
                request = request.header("x-warden-signature", format!("sha256={}", sign(secret, &body)));
            }
            request.header("x-warden-event", &outgoing.kind).body(body)
        }
        NotifyFormat::Ntfy => {
            let urgent = outgoing.kind.starts_with("approval.");
            http.post(url)
                .header("title", "warden")
                .header("priority", if urgent { "high" } else { "default" })
                .header("tags", if urgent { "warning" } else { "robot" })
                .body(outgoing.text.clone())
        }
    };
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let why = format!("the receiver answered {status}");
            if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                Err(Failure::Retry(why))
            } else {
                Err(Failure::Final(why))
            }
        }
        Err(e) => Err(Failure::Retry(format!("no answer: {e}"))),
    }
}

/// The hex HMAC-SHA256 of a body under a secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A desktop notification, where the daemon runs in a desktop session.
async fn desktop(text: &str) -> Result<(), Failure> {
    let in_session =
        ["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"].iter().any(|v| std::env::var_os(v).is_some());
    let mut command = if cfg!(target_os = "macos") {
        let mut command = tokio::process::Command::new("osascript");
        let quoted = text.replace('\\', "\\\\").replace('"', "\\\"");
        command.args(["-e", &format!("display notification \"{quoted}\" with title \"warden\"")]);
        command
    } else if in_session {
        let mut command = tokio::process::Command::new("notify-send");
        command.args(["--app-name=warden", "warden", text]);
        command
    } else {
        return Err(Failure::Final(
            "the daemon runs in no desktop session (no DISPLAY, WAYLAND_DISPLAY or D-Bus session)".into(),
        ));
    };
    command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    match tokio::time::timeout(DELIVERY_TIMEOUT, command.status()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(Failure::Retry(format!("the desktop notifier exited with {status}"))),
        Ok(Err(e)) => Err(Failure::Final(format!("no desktop notifier: {e}"))),
        Err(_) => Err(Failure::Retry("the desktop notifier did not finish".into())),
    }
}

/// One line saying what happened, for a person (agent-written text is escaped).
fn describe(kind: &str, data: &serde_json::Value) -> String {
    let text = |key: &str| crate::terminal::escape_line(data[key].as_str().unwrap_or("")).into_owned();
    match kind {
        "approval.requested" => format!("Approval needed: {}", text("title")),
        "approval.decided" => format!("Approval {}: {}", text("status"), text("title")),
        "approval.expired" => format!("Approval expired: {}", text("title")),
        k if k.starts_with("execution.") => format!(
            "Execution {} ({}) {}: {}",
            data["id"],
            text("profile"),
            text("status").replace('_', " "),
            crate::terminal::escape_line(&data["prompt"].as_str().unwrap_or("").chars().take(120).collect::<String>())
        ),
        "provider.budget_reached" => format!("Provider {} reached its daily budget: new starts wait", text("name")),
        other => format!("warden: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_match_types_prefixes_and_conditions() {
        let failed = Rule::parse("execution.finished status=failed|timed_out").unwrap();
        assert!(failed.matches("execution.finished", &json!({"status": "failed"})));
        assert!(failed.matches("execution.finished", &json!({"status": "timed_out"})));
        assert!(!failed.matches("execution.finished", &json!({"status": "succeeded"})));
        assert!(!failed.matches("execution.started", &json!({"status": "failed"})));
        let all = Rule::parse("approval.*").unwrap();
        assert!(all.matches("approval.requested", &json!({})));
        assert!(Rule::parse("x status").is_err());
        assert!(Rule::parse("   ").is_err());
    }

    #[test]
    fn output_lines_are_never_wanted() {
        let (_, wanted) = Notifier::new(vec![NotifyTarget {
            url: Some("http://127.0.0.1:1/x".into()),
            desktop: false,
            events: vec!["*".into()],
            secret: None,
            format: NotifyFormat::Json,
        }]);
        assert!(wanted.any("approval.requested"));
        assert!(!wanted.any("execution.output"));
    }

    #[test]
    fn the_signature_is_rfc_4231s() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn labels_hide_secrets_in_urls() {
        let target = NotifyTarget {
            url: Some("https://user:pw@ntfy.sh/secret-topic?auth=x".into()),
            desktop: false,
            events: vec!["approval.requested".into()],
            secret: None,
            format: NotifyFormat::Ntfy,
        };
        assert_eq!(target.label(), "https://ntfy.sh");
    }
}
