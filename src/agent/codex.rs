//! Codex's `codex exec --json`: one JSON object a line — `thread.started` (the thread
//! id, which `codex exec resume` takes), `turn.started`, `item.started` /
//! `item.updated` / `item.completed` (an agent message, a command, a file change, an
//! MCP tool call, a web search, reasoning, a to-do list, a warning), `turn.completed`
//! (usage) or `turn.failed`, and `error`. Codex reports no cost; its answer is its last
//! message.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{count, excerpt, text};
use crate::domain::{AgentEvent, AgentResult, AgentSummary, Tokens, Usage};

#[derive(Default)]
pub struct Codex {
    /// Items whose call was already told (at `item.started`).
    called: HashSet<String>,
    last_message: Option<String>,
}

impl Codex {
    pub fn line(&mut self, line: &Value, out: &mut Vec<AgentEvent>, summary: &mut AgentSummary) {
        match text(line, "type") {
            Some("thread.started") => out.push(AgentEvent::Started {
                agent_session_id: text(line, "thread_id").map(str::to_owned),
                model: None,
            }),
            Some("item.started") => {
                if let Some(item) = line.get("item") {
                    self.call(item, out);
                }
            }
            Some("item.completed") => {
                if let Some(item) = line.get("item") {
                    self.completed(item, out);
                }
            }
            Some("turn.completed") => {
                summary.turns = summary.turns.saturating_add(1);
                // Codex's usage is the thread's total so far, over every turn of a
                // resumed thread too: what this turn used is what it adds.
                let total = line.get("usage").map(usage).unwrap_or_default();
                let counted = summary.conversation_tokens.unwrap_or_default();
                summary.conversation_tokens = Some(total);
                let usage = Usage::from_tokens(total.beyond(&counted), None);
                if !usage.is_zero() {
                    out.push(AgentEvent::Usage(usage));
                }
                out.push(AgentEvent::Result(AgentResult {
                    text: self.last_message.clone().unwrap_or_default(),
                    is_error: false,
                    turns: Some(summary.turns),
                    duration_ms: None,
                    cost_usd: None,
                }));
            }
            Some("turn.failed") => {
                summary.turns = summary.turns.saturating_add(1);
                let why = line.get("error").and_then(|e| text(e, "message")).unwrap_or("the turn failed");
                out.push(AgentEvent::Result(AgentResult {
                    text: why.to_owned(),
                    is_error: true,
                    turns: Some(summary.turns),
                    duration_ms: None,
                    cost_usd: None,
                }));
            }
            _ => {}
        }
    }

    /// A tool item's call, once.
    fn call(&mut self, item: &Value, out: &mut Vec<AgentEvent>) {
        let Some((tool, input)) = tool_call(item) else { return };
        let id = text(item, "id").unwrap_or_default().to_owned();
        if self.called.insert(id.clone()) {
            out.push(AgentEvent::ToolCall { call_id: id, tool, input });
        }
    }

    fn completed(&mut self, item: &Value, out: &mut Vec<AgentEvent>) {
        let kind = text(item, "type");
        if kind == Some("agent_message") {
            let said = text(item, "text").unwrap_or_default().to_owned();
            self.last_message = Some(said.clone());
            out.push(AgentEvent::Message { text: said });
            return;
        }
        if tool_call(item).is_none() {
            return;
        }
        self.call(item, out);
        let id = text(item, "id").unwrap_or_default().to_owned();
        self.called.remove(&id);
        let status = text(item, "status");
        let (ok, said) = match kind {
            Some("command_execution") => (
                status == Some("completed") && item.get("exit_code").and_then(Value::as_i64) == Some(0),
                text(item, "aggregated_output").unwrap_or_default().to_owned(),
            ),
            Some("file_change") => {
                let changes = item.get("changes").and_then(Value::as_array);
                let paths: Vec<String> = changes
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{} {}", text(c, "kind").unwrap_or("update"), text(c, "path").unwrap_or("?")))
                    .collect();
                (status == Some("completed"), paths.join("\n"))
            }
            Some("mcp_tool_call") => {
                let error = item.get("error").and_then(|e| text(e, "message"));
                let said = match error {
                    Some(error) => error.to_owned(),
                    None => item.get("result").map(|r| r.to_string()).unwrap_or_default(),
                };
                (status == Some("completed") && error.is_none(), said)
            }
            _ => (status != Some("failed"), String::new()),
        };
        out.push(AgentEvent::ToolResult { call_id: id, ok, summary: excerpt(&said) });
    }
}

/// The tool and its input, for items that are tool calls.
fn tool_call(item: &Value) -> Option<(String, Value)> {
    match text(item, "type")? {
        "command_execution" => Some(("shell".into(), json!({ "command": item.get("command") }))),
        "file_change" => Some(("apply_patch".into(), json!({ "changes": item.get("changes") }))),
        "mcp_tool_call" => Some((
            format!("{}.{}", text(item, "server").unwrap_or("mcp"), text(item, "tool").unwrap_or("?")),
            item.get("arguments").cloned().unwrap_or(Value::Null),
        )),
        "web_search" => Some(("web_search".into(), json!({ "query": item.get("query") }))),
        _ => None,
    }
}

/// Codex's usage counts cached input inside `input_tokens`; warden's `input` does not.
fn usage(usage: &Value) -> Tokens {
    let cached = count(usage, "cached_input_tokens");
    Tokens {
        input: count(usage, "input_tokens").saturating_sub(cached),
        output: count(usage, "output_tokens"),
        cache_read: cached,
        cache_write: count(usage, "cache_write_input_tokens"),
    }
}
