//! Claude Code's `--output-format stream-json --verbose`: one JSON object a line —
//! `system` (`init` carries the session id and model), `assistant` (one line per
//! content block of a model response, each with the response's usage so far), `user`
//! (tool results), `result` (the answer, turns, duration, total usage and cost).

use serde_json::Value;

use super::{count, excerpt, text};
use crate::domain::{AgentEvent, AgentResult, AgentSummary, Tokens, Usage};

#[derive(Default)]
pub struct Claude {
    /// The model response whose usage was counted last: its blocks come one a line,
    /// each repeating the usage.
    counted_response: Option<String>,
}

impl Claude {
    pub fn line(&mut self, line: &Value, out: &mut Vec<AgentEvent>, summary: &mut AgentSummary) {
        match text(line, "type") {
            Some("system") if text(line, "subtype") == Some("init") => out.push(AgentEvent::Started {
                agent_session_id: text(line, "session_id").map(str::to_owned),
                model: text(line, "model").map(str::to_owned),
            }),
            Some("assistant") => self.assistant(line, out, summary),
            Some("user") => tool_results(line, out),
            Some("result") => result(line, out, summary),
            _ => {}
        }
    }

    fn assistant(&mut self, line: &Value, out: &mut Vec<AgentEvent>, summary: &mut AgentSummary) {
        let Some(message) = line.get("message") else { return };
        let id = text(message, "id").map(str::to_owned);
        if id.is_none() || id != self.counted_response {
            self.counted_response = id;
            summary.turns = summary.turns.saturating_add(1);
            if let Some(usage) = message.get("usage") {
                let usage = Usage::from_tokens(tokens(usage), None);
                if !usage.is_zero() {
                    out.push(AgentEvent::Usage(usage));
                }
            }
        }
        for block in message.get("content").and_then(Value::as_array).into_iter().flatten() {
            match text(block, "type") {
                Some("text") => {
                    let said = text(block, "text").unwrap_or_default();
                    if !said.trim().is_empty() {
                        out.push(AgentEvent::Message { text: said.to_owned() });
                    }
                }
                Some("tool_use") => out.push(AgentEvent::ToolCall {
                    call_id: text(block, "id").unwrap_or_default().to_owned(),
                    tool: text(block, "name").unwrap_or_default().to_owned(),
                    input: block.get("input").cloned().unwrap_or(Value::Null),
                }),
                _ => {}
            }
        }
    }
}

/// A message API `usage` object as tokens.
fn tokens(usage: &Value) -> Tokens {
    Tokens {
        input: count(usage, "input_tokens"),
        output: count(usage, "output_tokens"),
        cache_read: count(usage, "cache_read_input_tokens"),
        cache_write: count(usage, "cache_creation_input_tokens"),
    }
}

fn tool_results(line: &Value, out: &mut Vec<AgentEvent>) {
    let content = line.get("message").and_then(|m| m.get("content")).and_then(Value::as_array);
    for block in content.into_iter().flatten() {
        if text(block, "type") != Some("tool_result") {
            continue;
        }
        let said = match block.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|part| text(part, "text")).collect::<Vec<_>>().join("\n")
            }
            _ => String::new(),
        };
        out.push(AgentEvent::ToolResult {
            call_id: text(block, "tool_use_id").unwrap_or_default().to_owned(),
            ok: !block.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            summary: excerpt(&said),
        });
    }
}

/// The end: Claude's totals are the truth, so what the responses' usage left out (their
/// last output tokens) and the cost come as one more `agent.usage` first.
fn result(line: &Value, out: &mut Vec<AgentEvent>, summary: &AgentSummary) {
    let cost = line.get("total_cost_usd").and_then(Value::as_f64).filter(|c| *c >= 0.0);
    let total = line.get("usage").map(tokens).unwrap_or_default();
    let missing = total.beyond(&summary.tokens);
    let missing_cost = cost.map(|c| (c - summary.cost_usd.unwrap_or(0.0)).max(0.0));
    let usage = Usage::from_tokens(missing, missing_cost);
    if !usage.is_zero() {
        out.push(AgentEvent::Usage(usage));
    }
    let is_error = line.get("is_error").and_then(Value::as_bool).unwrap_or(false)
        || text(line, "subtype").is_some_and(|s| s != "success");
    let answer = text(line, "result").map(str::to_owned).unwrap_or_else(|| {
        // An error result may carry its reasons instead.
        line.get("errors").map(|e| e.to_string()).unwrap_or_default()
    });
    out.push(AgentEvent::Result(AgentResult {
        text: answer,
        is_error,
        turns: line.get("num_turns").and_then(Value::as_u64).map(|t| t as u32),
        duration_ms: line.get("duration_ms").and_then(Value::as_u64),
        cost_usd: cost,
    }));
}
