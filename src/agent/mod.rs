//! Reading agents' structured output. An [`AgentReader`] per agent execution (made for
//! its profile's `format`) takes each stdout line as the capture thread reads it and
//! turns the lines it knows into [`AgentEvent`]s, keeping the execution's
//! [`AgentSummary`] up to date. It only reads: every line is still stored as output
//! whatever it made of it, so nothing is lost, and a line that looks like JSON but does
//! not parse is counted (`malformed_lines`). One format per module; the capture threads
//! (`execution_monitor/process.rs`) are the only caller.

mod claude;
mod codex;
mod gemini;
pub mod profiles;
pub mod render;

use serde_json::Value;

use crate::domain::{AgentEvent, AgentFormat, AgentSummary, Tokens, Usage};

/// The most bytes of a tool's result an `agent.tool_result` carries.
pub const RESULT_EXCERPT_BYTES: usize = 2000;

/// What one read of stdout lines made: the events in order, the summary if it changed
/// and what the reads spent (tokens and dollars), for the store and the monitor.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<AgentEvent>,
    pub summary: Option<AgentSummary>,
    pub spent: Usage,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.summary.is_none()
    }
}

/// One agent execution's reader: its format's state and its summary.
pub struct AgentReader {
    format: Format,
    summary: AgentSummary,
}

/// The formats' own state.
enum Format {
    Claude(claude::Claude),
    Codex(codex::Codex),
    Gemini(gemini::Gemini),
}

impl AgentReader {
    /// A reader for `format`; none for `text`, whose output is only output.
    /// `conversation` is what the agent's resumed conversation had used before (the
    /// previous turn's `conversation_tokens`), for agents that report totals over it.
    pub fn new(format: AgentFormat, conversation: Option<Tokens>) -> Option<Self> {
        let state = match format {
            AgentFormat::Text => return None,
            AgentFormat::ClaudeStreamJson => Format::Claude(claude::Claude::default()),
            AgentFormat::CodexJson => Format::Codex(codex::Codex::default()),
            AgentFormat::GeminiStreamJson => Format::Gemini(gemini::Gemini::default()),
        };
        let summary = AgentSummary { conversation_tokens: conversation, ..AgentSummary::new(format) };
        Some(AgentReader { format: state, summary })
    }

    pub fn summary(&self) -> &AgentSummary {
        &self.summary
    }

    /// Reads lines joined by `\n` (a chunk of stdout as stored).
    pub fn read_lines(&mut self, text: &str) -> Batch {
        let before = self.summary.clone();
        let mut events = Vec::new();
        for line in text.split('\n') {
            self.read_line(line, &mut events);
        }
        self.batch(before, events)
    }

    /// The output has ended: what the format held back (a message still being
    /// streamed) comes out.
    pub fn finish(&mut self) -> Batch {
        let before = self.summary.clone();
        let mut events = Vec::new();
        match &mut self.format {
            Format::Claude(_) | Format::Codex(_) => {}
            Format::Gemini(state) => state.finish(&mut events),
        }
        self.batch(before, events)
    }

    fn read_line(&mut self, line: &str, events: &mut Vec<AgentEvent>) {
        let line = line.trim();
        if !line.starts_with('{') {
            return;
        }
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            self.summary.malformed_lines += 1;
            return;
        };
        let first = events.len();
        match &mut self.format {
            Format::Claude(state) => state.line(&value, events, &mut self.summary),
            Format::Codex(state) => state.line(&value, events, &mut self.summary),
            Format::Gemini(state) => state.line(&value, events, &mut self.summary),
        }
        for event in &events[first..] {
            absorb(&mut self.summary, event);
        }
    }

    fn batch(&self, before: AgentSummary, events: Vec<AgentEvent>) -> Batch {
        let mut spent = Usage::default();
        for event in &events {
            if let AgentEvent::Usage(usage) = event {
                add_usage(&mut spent, usage);
            }
        }
        let summary = (self.summary != before).then(|| self.summary.clone());
        Batch { events, summary, spent }
    }
}

fn add_usage(total: &mut Usage, usage: &Usage) {
    let mut tokens = total.tokens();
    tokens.add(&usage.tokens());
    let cost = match (total.cost_usd, usage.cost_usd) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    *total = Usage::from_tokens(tokens, cost);
}

/// What an event changes in the summary.
fn absorb(summary: &mut AgentSummary, event: &AgentEvent) {
    match event {
        AgentEvent::Started { agent_session_id, model } => {
            if agent_session_id.is_some() {
                summary.agent_session_id.clone_from(agent_session_id);
            }
            if model.is_some() {
                summary.model.clone_from(model);
            }
        }
        AgentEvent::ToolCall { .. } => summary.tool_calls = summary.tool_calls.saturating_add(1),
        AgentEvent::Usage(usage) => {
            summary.tokens.add(&usage.tokens());
            if let Some(cost) = usage.cost_usd {
                summary.cost_usd = Some(summary.cost_usd.unwrap_or(0.0) + cost);
            }
        }
        AgentEvent::Result(result) => {
            if let Some(turns) = result.turns {
                summary.turns = turns;
            }
            summary.result = Some(result.clone());
        }
        AgentEvent::Message { .. } | AgentEvent::ToolResult { .. } => {}
    }
}

/// A string field, if it is one.
fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A count field, 0 when missing.
fn count(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// At most [`RESULT_EXCERPT_BYTES`] of a tool's result, cut on a character boundary,
/// saying how much was left out.
pub fn excerpt(text: &str) -> String {
    if text.len() <= RESULT_EXCERPT_BYTES {
        return text.to_owned();
    }
    let mut cut = RESULT_EXCERPT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} more bytes)", &text[..cut], text.len() - cut)
}

#[cfg(test)]
mod tests;
