//! How a transcript entry reads as lines of text: `warden logs --transcript` prints
//! them and `warden dash` shows them. Everything the agent wrote is escaped for the
//! terminal; long inputs and results are cut.

use serde_json::Value;

use crate::terminal::escape_line;

/// At most this many lines of a tool's result are shown.
const RESULT_LINES: usize = 6;
/// At most this many characters of a tool call's input are shown.
const INPUT_CHARS: usize = 240;

/// What kind of line it is, for colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// The agent's words.
    Message,
    /// A tool call.
    Call,
    /// A tool's result.
    Result { ok: bool },
    /// Where the conversation starts and how it ended.
    Marker { ok: bool },
}

/// The lines of one agent event (`type` and `data` as the event stream carries them);
/// none for the types a transcript does not show (`agent.usage`, whose sum shows in the
/// result, and anything that is not an agent event).
pub fn entry_lines(kind: &str, data: &Value) -> Vec<(Tone, String)> {
    let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default();
    match kind {
        "agent.started" => {
            let model = data.get("model").and_then(Value::as_str).unwrap_or("agent");
            let session = data.get("agent_session_id").and_then(Value::as_str).unwrap_or("-");
            vec![(
                Tone::Marker { ok: true },
                format!("── {} · conversation {}", escape_line(model), escape_line(session)),
            )]
        }
        "agent.message" => {
            text("text").lines().map(|line| (Tone::Message, format!("  {}", escape_line(line)))).collect()
        }
        "agent.tool_call" => {
            let input = data.get("input").map(headline).unwrap_or_default();
            vec![(Tone::Call, format!("→ {} {}", escape_line(text("tool")), cut(&escape_line(&input), INPUT_CHARS)))]
        }
        "agent.tool_result" => {
            let ok = data.get("ok").and_then(Value::as_bool).unwrap_or(true);
            let summary = text("summary");
            let mut lines: Vec<(Tone, String)> = summary
                .lines()
                .take(RESULT_LINES)
                .map(|line| (Tone::Result { ok }, format!("  │ {}", escape_line(line))))
                .collect();
            let more = summary.lines().count().saturating_sub(RESULT_LINES);
            if more > 0 {
                lines.push((Tone::Result { ok }, format!("  │ … {more} more line(s)")));
            }
            if lines.is_empty() {
                lines.push((Tone::Result { ok }, format!("  │ ({})", if ok { "done" } else { "failed" })));
            }
            lines
        }
        "agent.result" => {
            let is_error = data.get("is_error").and_then(Value::as_bool).unwrap_or(false);
            let mut facts = Vec::new();
            if let Some(turns) = data.get("turns").and_then(Value::as_u64) {
                facts.push(format!("{turns} turn(s)"));
            }
            if let Some(ms) = data.get("duration_ms").and_then(Value::as_u64) {
                facts.push(format!("{:.1} s", ms as f64 / 1000.0));
            }
            if let Some(cost) = data.get("cost_usd").and_then(Value::as_f64) {
                facts.push(format!("${cost:.4}"));
            }
            let head = if is_error { "✗ the agent failed" } else { "✓ done" };
            let mut lines = vec![(Tone::Marker { ok: !is_error }, format!("{head}: {}", facts.join(", ")))];
            if is_error {
                lines.extend(
                    text("text").lines().map(|line| (Tone::Marker { ok: false }, format!("  {}", escape_line(line)))),
                );
            }
            lines
        }
        _ => Vec::new(),
    }
}

/// The fields that say best what a tool call does (a command, a file, a search).
const HEADLINE_FIELDS: &[&str] = &["command", "file_path", "path", "pattern", "query", "url", "prompt"];

/// A tool call's input as one line: its telling field (`command`, `file_path`, …) or
/// its only field, as it is; else the whole input as JSON.
fn headline(input: &Value) -> String {
    let telling = match input {
        Value::Object(fields) if fields.len() == 1 => fields.values().next(),
        Value::Object(fields) => HEADLINE_FIELDS.iter().find_map(|key| fields.get(*key)),
        _ => None,
    };
    match telling.unwrap_or(input) {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_read_as_a_conversation_with_agent_text_escaped() {
        let call = entry_lines(
            "agent.tool_call",
            &json!({"call_id": "1", "tool": "Bash", "input": {"command": "ls\u{1b}]0;x\u{7}"}}),
        );
        assert_eq!(call, [(Tone::Call, "→ Bash ls\\e]0;x\\x07".to_owned())]);
        let result = entry_lines("agent.tool_result", &json!({"call_id": "1", "ok": false, "summary": "a\nb"}));
        assert_eq!(result.len(), 2);
        assert!(result.iter().all(|(tone, _)| *tone == Tone::Result { ok: false }));
        let end = entry_lines(
            "agent.result",
            &json!({"text": "x", "is_error": false, "turns": 2, "duration_ms": 1500, "cost_usd": 0.0123}),
        );
        assert_eq!(end[0].1, "✓ done: 2 turn(s), 1.5 s, $0.0123");
        assert!(entry_lines("agent.usage", &json!({})).is_empty());
    }
}
