//! Gemini CLI's `--output-format stream-json`: one JSON object a line — `init` (session
//! id, model), `message` (the user's and the assistant's words; the assistant's may
//! come in `delta` pieces), `tool_use`, `tool_result`, `error` (a warning) and `result`
//! (status and the run's token stats). Gemini reports no cost; its answer is its last
//! message.

use serde_json::Value;

use super::{count, excerpt, text};
use crate::domain::{AgentEvent, AgentResult, AgentSummary, Tokens, Usage};

#[derive(Default)]
pub struct Gemini {
    /// The assistant's message being streamed in pieces.
    streaming: Option<String>,
    last_message: Option<String>,
}

impl Gemini {
    pub fn line(&mut self, line: &Value, out: &mut Vec<AgentEvent>, summary: &mut AgentSummary) {
        let kind = text(line, "type");
        let piece = kind == Some("message") && line.get("delta").and_then(Value::as_bool) == Some(true);
        if !piece && kind.is_some() {
            self.finish(out);
        }
        match kind {
            Some("init") => out.push(AgentEvent::Started {
                agent_session_id: text(line, "session_id").map(str::to_owned),
                model: text(line, "model").map(str::to_owned),
            }),
            Some("message") if text(line, "role") == Some("assistant") => {
                let said = text(line, "content").unwrap_or_default();
                if piece {
                    if self.streaming.is_none() {
                        summary.turns = summary.turns.saturating_add(1);
                    }
                    self.streaming.get_or_insert_with(String::new).push_str(said);
                } else {
                    summary.turns = summary.turns.saturating_add(1);
                    self.say(said.to_owned(), out);
                }
            }
            Some("tool_use") => out.push(AgentEvent::ToolCall {
                call_id: text(line, "tool_id").unwrap_or_default().to_owned(),
                tool: text(line, "tool_name").unwrap_or_default().to_owned(),
                input: line.get("parameters").cloned().unwrap_or(Value::Null),
            }),
            Some("tool_result") => {
                let ok = text(line, "status") == Some("success");
                let said = match (text(line, "output"), line.get("error").and_then(|e| text(e, "message"))) {
                    (_, Some(error)) if !ok => error,
                    (Some(output), _) => output,
                    _ => "",
                };
                out.push(AgentEvent::ToolResult {
                    call_id: text(line, "tool_id").unwrap_or_default().to_owned(),
                    ok,
                    summary: excerpt(said),
                });
            }
            Some("result") => {
                let stats = line.get("stats").cloned().unwrap_or(Value::Null);
                let cached = count(&stats, "cached");
                let usage = Usage::from_tokens(
                    Tokens {
                        input: count(&stats, "input_tokens").saturating_sub(cached),
                        output: count(&stats, "output_tokens"),
                        cache_read: cached,
                        cache_write: 0,
                    },
                    None,
                );
                if !usage.is_zero() {
                    out.push(AgentEvent::Usage(usage));
                }
                let ok = text(line, "status") == Some("success");
                let error = line.get("error").and_then(|e| text(e, "message"));
                out.push(AgentEvent::Result(AgentResult {
                    text: match error {
                        Some(error) if !ok => error.to_owned(),
                        _ => self.last_message.clone().unwrap_or_default(),
                    },
                    is_error: !ok,
                    turns: Some(summary.turns),
                    duration_ms: stats.get("duration_ms").and_then(Value::as_u64),
                    cost_usd: None,
                }));
            }
            _ => {}
        }
    }

    /// A message streamed in pieces is whole once something else comes (or the output
    /// ends).
    pub fn finish(&mut self, out: &mut Vec<AgentEvent>) {
        if let Some(said) = self.streaming.take() {
            self.say(said, out);
        }
    }

    fn say(&mut self, said: String, out: &mut Vec<AgentEvent>) {
        if said.trim().is_empty() {
            return;
        }
        self.last_message = Some(said.clone());
        out.push(AgentEvent::Message { text: said });
    }
}
