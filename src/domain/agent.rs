//! Agent activity as the API shows it: the output format a profile's agent writes, the
//! agent events warden reads from it, and the running summary of one execution's
//! activity (session id, model, turns, tool calls, tokens, cost, result). The
//! normalisers in `crate::agent` make them; the store keeps them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

words! {
    "kebab-case" [Default, Hash]
    /// What a profile's agent writes on stdout: `text` is plain output; the others are
    /// an agent's JSON lines, which warden reads into agent events.
    pub enum AgentFormat {
        #[default]
        Text,
        ClaudeStreamJson,
        CodexJson,
        GeminiStreamJson,
    }
}

impl AgentFormat {
    pub fn is_text(self) -> bool {
        self == AgentFormat::Text
    }
}

/// Tokens an agent reported. `input` counts input tokens that were not read from the
/// model's prompt cache (Codex's and Gemini's totals are converted to this meaning).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Tokens {
    /// Adds, saturating: the counts come from what an agent printed, which may be
    /// anything.
    pub fn add(&mut self, other: &Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_write = self.cache_write.saturating_add(other.cache_write);
    }

    /// Input of every kind (uncached, cache reads, cache writes).
    pub fn all_input(&self) -> u64 {
        self.input.saturating_add(self.cache_read).saturating_add(self.cache_write)
    }

    /// What `self` holds beyond `before`, never below zero.
    pub fn beyond(&self, before: &Tokens) -> Tokens {
        Tokens {
            input: self.input.saturating_sub(before.input),
            output: self.output.saturating_sub(before.output),
            cache_read: self.cache_read.saturating_sub(before.cache_read),
            cache_write: self.cache_write.saturating_sub(before.cache_write),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Tokens::default()
    }
}

/// How an agent's run ended, as it said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentResult {
    /// The agent's final answer (for agents that send none, its last message).
    pub text: String,
    pub is_error: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// What an agent execution has done so far (`agent` in an execution's JSON; null for
/// `text` profiles).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentSummary {
    pub format: AgentFormat,
    /// The agent's own conversation id (Claude's `session_id`, Codex's thread id),
    /// which `{agent_session_id}` hands to a session's next turn.
    pub agent_session_id: Option<String>,
    pub model: Option<String>,
    /// Model turns (API round trips) so far; the agent's own count once it has ended.
    pub turns: u32,
    pub tool_calls: u32,
    pub tokens: Tokens,
    /// Dollars, as the agent reported them (Claude Code does; Codex does not).
    pub cost_usd: Option<f64>,
    pub result: Option<AgentResult>,
    /// Output lines that looked like the format's JSON but did not parse; they are
    /// kept as plain output.
    pub malformed_lines: u64,
    /// The agent's own running total for its conversation, where it reports totals
    /// over a resumed conversation (Codex): a session's next turn counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_tokens: Option<Tokens>,
}

impl AgentSummary {
    pub fn new(format: AgentFormat) -> Self {
        AgentSummary {
            format,
            agent_session_id: None,
            model: None,
            turns: 0,
            tool_calls: 0,
            tokens: Tokens::default(),
            cost_usd: None,
            result: None,
            malformed_lines: 0,
            conversation_tokens: None,
        }
    }
}

/// Tokens and dollars spent, as one `agent.usage` event adds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl Usage {
    pub fn tokens(&self) -> Tokens {
        Tokens {
            input: self.input_tokens,
            output: self.output_tokens,
            cache_read: self.cache_read_tokens,
            cache_write: self.cache_write_tokens,
        }
    }

    pub fn from_tokens(tokens: Tokens, cost_usd: Option<f64>) -> Self {
        Usage {
            input_tokens: tokens.input,
            output_tokens: tokens.output,
            cache_read_tokens: tokens.cache_read,
            cache_write_tokens: tokens.cache_write,
            cost_usd,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.tokens().is_zero() && self.cost_usd.is_none_or(|c| c == 0.0)
    }
}

/// What a provider's agents spent (tokens count input of every kind: uncached, cache
/// reads and cache writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Spend {
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// One thing an agent did, read from its output: stored and streamed as an
/// `agent.<kind>` event whose data is the variant's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentEvent {
    /// The agent's conversation started: its id and model (`agent.started`).
    Started { agent_session_id: Option<String>, model: Option<String> },
    /// The assistant's words (`agent.message`).
    Message { text: String },
    /// A tool the agent called (`agent.tool_call`).
    ToolCall { call_id: String, tool: String, input: serde_json::Value },
    /// What the call gave back (`agent.tool_result`): a bounded excerpt.
    ToolResult { call_id: String, ok: bool, summary: String },
    /// Tokens and dollars this step added (`agent.usage`).
    Usage(Usage),
    /// The run's end as the agent reported it (`agent.result`).
    Result(AgentResult),
}

impl AgentEvent {
    /// The event type it is stored and streamed as.
    pub fn event_type(&self) -> &'static str {
        match self {
            AgentEvent::Started { .. } => "agent.started",
            AgentEvent::Message { .. } => "agent.message",
            AgentEvent::ToolCall { .. } => "agent.tool_call",
            AgentEvent::ToolResult { .. } => "agent.tool_result",
            AgentEvent::Usage(_) => "agent.usage",
            AgentEvent::Result(_) => "agent.result",
        }
    }

    /// The event's data: its fields, without the tag.
    pub fn data(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            fields.remove("kind");
        }
        value
    }
}
