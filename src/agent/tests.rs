use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::domain::{AgentResult, Tokens};

/// The agent events of a captured Claude Code run with one tool call: Claude reports
/// usage with each model response and its totals at the end.
const CLAUDE_TOOL_RUN: [&str; 8] = [
    "agent.started",
    "agent.usage",
    "agent.tool_call",
    "agent.tool_result",
    "agent.usage",
    "agent.message",
    "agent.usage",
    "agent.result",
];

/// The agent events of a Codex or Gemini run with one tool call: usage comes once, at
/// the end.
const TOOL_RUN: [&str; 6] =
    ["agent.started", "agent.tool_call", "agent.tool_result", "agent.message", "agent.usage", "agent.result"];

fn read_all(format: AgentFormat, conversation: Option<Tokens>, text: &str) -> (Vec<AgentEvent>, AgentSummary) {
    let mut reader = AgentReader::new(format, conversation).expect("an agent format");
    let mut events = Vec::new();
    // Line by line, as reads may split a stream anywhere between lines.
    for line in text.lines() {
        events.extend(reader.read_lines(line).events);
    }
    events.extend(reader.finish().events);
    (events, reader.summary().clone())
}

fn kinds(events: &[AgentEvent]) -> Vec<&'static str> {
    events.iter().map(AgentEvent::event_type).collect()
}

#[test]
fn claude_code_stream_json_becomes_a_transcript_with_its_own_totals() {
    let (events, summary) =
        read_all(AgentFormat::ClaudeStreamJson, None, include_str!("testdata/claude-tool-call.jsonl"));
    assert_eq!(kinds(&events), CLAUDE_TOOL_RUN);
    assert_eq!(
        events[2],
        AgentEvent::ToolCall {
            call_id: "toolu_01".into(),
            tool: "Bash".into(),
            input: json!({"command": "echo hello-from-tool", "description": "Say hello"}),
        }
    );
    assert_eq!(
        events[3],
        AgentEvent::ToolResult { call_id: "toolu_01".into(), ok: true, summary: "hello-from-tool".into() }
    );
    assert_eq!(events[5], AgentEvent::Message { text: "All done: hello.".into() });
    assert_eq!(summary.agent_session_id.as_deref(), Some("738afc72-6312-47ef-b0b9-a9c920f4d636"));
    assert_eq!(summary.model.as_deref(), Some("claude-opus-5-5"));
    assert_eq!((summary.turns, summary.tool_calls, summary.malformed_lines), (2, 1, 0));
    // The result line's totals win over the responses' early usage.
    assert_eq!(summary.tokens, Tokens { input: 240, output: 84, cache_read: 60, cache_write: 10 });
    assert_eq!(summary.cost_usd, Some(0.002702));
    let result = summary.result.expect("a result");
    assert_eq!(
        result,
        AgentResult {
            text: "All done: hello.".into(),
            is_error: false,
            turns: Some(2),
            duration_ms: Some(324),
            cost_usd: Some(0.002702)
        }
    );
}

#[test]
fn codex_json_becomes_a_transcript_and_a_resumed_thread_counts_only_its_turn() {
    let (events, first) = read_all(AgentFormat::CodexJson, None, include_str!("testdata/codex-tool-call.jsonl"));
    assert_eq!(kinds(&events), TOOL_RUN);
    assert_eq!(
        events[1],
        AgentEvent::ToolCall {
            call_id: "item_1".into(),
            tool: "shell".into(),
            input: json!({"command": "/bin/bash -lc 'echo hello-from-tool'"}),
        }
    );
    assert_eq!(
        events[2],
        AgentEvent::ToolResult { call_id: "item_1".into(), ok: true, summary: "hello-from-tool\n".into() }
    );
    assert_eq!(first.agent_session_id.as_deref(), Some("01a2370b-b390-75f1-9e22-75a19f93280b"));
    assert_eq!(first.tokens, Tokens { input: 160, output: 60, cache_read: 40, cache_write: 0 });
    assert_eq!(first.result.as_ref().map(|r| r.text.as_str()), Some("All done: hello."));
    assert_eq!(first.cost_usd, None);

    // Codex reports the thread's total: the resumed turn adds only what it used.
    let (_, resumed) =
        read_all(AgentFormat::CodexJson, first.conversation_tokens, include_str!("testdata/codex-resumed.jsonl"));
    assert_eq!(resumed.tokens, Tokens { input: 80, output: 30, cache_read: 20, cache_write: 0 });
    assert_eq!(resumed.conversation_tokens, Some(Tokens { input: 240, output: 90, cache_read: 60, cache_write: 0 }));
}

#[test]
fn gemini_stream_json_becomes_a_transcript() {
    let (events, summary) =
        read_all(AgentFormat::GeminiStreamJson, None, include_str!("testdata/gemini-tool-call.jsonl"));
    assert_eq!(kinds(&events), TOOL_RUN);
    assert_eq!(
        events[1],
        AgentEvent::ToolCall {
            call_id: "run_shell_command__run_shell_command_1796223420598_0".into(),
            tool: "run_shell_command".into(),
            input: json!({"command": "echo hello-from-tool", "description": "Say hello"}),
        }
    );
    assert!(matches!(&events[2], AgentEvent::ToolResult { ok: true, summary, .. } if summary == "hello-from-tool"));
    assert_eq!(events[3], AgentEvent::Message { text: "All done: hello.".into() });
    assert_eq!(summary.agent_session_id.as_deref(), Some("b5d0932a-dcab-4e3b-be58-1ee478ac75e0"));
    // Gemini's input_tokens include the cached ones.
    assert_eq!(summary.tokens, Tokens { input: 270, output: 126, cache_read: 90, cache_write: 0 });
    assert_eq!(summary.tool_calls, 1);
    let result = summary.result.expect("a result");
    assert_eq!((result.text.as_str(), result.is_error, result.duration_ms), ("All done: hello.", false, Some(564)));

    // Its stats are the process's own, so a resumed conversation counts only its turn.
    let (_, resumed) = read_all(AgentFormat::GeminiStreamJson, None, include_str!("testdata/gemini-resumed.jsonl"));
    assert_eq!(resumed.tokens, Tokens { input: 180, output: 84, cache_read: 60, cache_write: 0 });
    assert_eq!(resumed.agent_session_id, summary.agent_session_id);
}

#[test]
fn streamed_pieces_make_one_message_and_a_failed_tool_says_why() {
    let lines = [
        r#"{"type":"message","role":"assistant","content":"I'll run ","delta":true}"#,
        r#"{"type":"message","role":"assistant","content":"a command.","delta":true}"#,
        r#"{"type":"tool_use","tool_name":"read_file","tool_id":"t2","parameters":{"absolute_path":"/nope"}}"#,
        r#"{"type":"tool_result","tool_id":"t2","status":"error","error":{"type":"file_not_found","message":"File not found: /nope"}}"#,
    ]
    .join("\n");
    let (events, _) = read_all(AgentFormat::GeminiStreamJson, None, &lines);
    assert_eq!(events[0], AgentEvent::Message { text: "I'll run a command.".into() });
    assert_eq!(
        events[2],
        AgentEvent::ToolResult { call_id: "t2".into(), ok: false, summary: "File not found: /nope".into() }
    );
}

#[test]
fn a_message_still_streaming_when_the_output_ends_is_kept() {
    let (events, _) = read_all(
        AgentFormat::GeminiStreamJson,
        None,
        r#"{"type":"message","role":"assistant","content":"cut sh","delta":true}"#,
    );
    assert_eq!(events, [AgentEvent::Message { text: "cut sh".into() }]);
}

#[test]
fn plain_lines_are_left_alone_and_broken_json_is_counted() {
    let text =
        "Starting…\n{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\"\n   \n{not json}\n[1,2]";
    let (events, summary) = read_all(AgentFormat::ClaudeStreamJson, None, text);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(summary.malformed_lines, 2);
}

#[test]
fn a_failed_claude_run_is_an_error_result() {
    let line = r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":3,"duration_ms":10,"total_cost_usd":0.5,"usage":{"input_tokens":5,"output_tokens":7}}"#;
    let (events, summary) = read_all(AgentFormat::ClaudeStreamJson, None, line);
    assert_eq!(kinds(&events), ["agent.usage", "agent.result"]);
    let result = summary.result.expect("a result");
    assert!(result.is_error);
    assert_eq!((summary.turns, summary.cost_usd), (3, Some(0.5)));
}

#[test]
fn long_tool_results_are_cut_on_a_character_boundary() {
    let long = "é".repeat(RESULT_EXCERPT_BYTES);
    let cut = excerpt(&long);
    assert!(cut.len() < RESULT_EXCERPT_BYTES + 40, "{}", cut.len());
    assert!(cut.ends_with(&format!("({} more bytes)", RESULT_EXCERPT_BYTES)), "{cut}");
    assert_eq!(excerpt("short"), "short");
}

#[test]
fn absurd_counts_from_a_hostile_agent_saturate_instead_of_overflowing() {
    let huge = u64::MAX;
    let lines = format!(
        "{{\"type\":\"assistant\",\"message\":{{\"id\":\"a\",\"usage\":{{\"input_tokens\":{huge},\"output_tokens\":{huge}}}}}}}\n\
         {{\"type\":\"assistant\",\"message\":{{\"id\":\"b\",\"usage\":{{\"input_tokens\":{huge},\"cache_read_input_tokens\":{huge}}}}}}}\n\
         {{\"type\":\"result\",\"num_turns\":99999999999,\"total_cost_usd\":-5,\"usage\":{{\"input_tokens\":1}}}}"
    );
    let (_, summary) = read_all(AgentFormat::ClaudeStreamJson, None, &lines);
    assert_eq!((summary.tokens.input, summary.tokens.all_input()), (huge, huge));
    assert_eq!(summary.cost_usd, None, "a negative cost counts as none");
    assert_eq!(summary.result.and_then(|r| r.cost_usd), None);
}

#[test]
fn text_has_no_reader() {
    assert!(AgentReader::new(AgentFormat::Text, None).is_none());
}

/// A stream of lines from each format's vocabulary, with noise between them.
fn any_line() -> impl Strategy<Value = String> {
    let known: Vec<String> = [
        include_str!("testdata/claude-tool-call.jsonl"),
        include_str!("testdata/codex-tool-call.jsonl"),
        include_str!("testdata/gemini-tool-call.jsonl"),
    ]
    .iter()
    .flat_map(|text| text.lines().map(str::to_owned))
    .collect();
    prop_oneof![
        proptest::sample::select(known),
        "[ -~]{0,40}",
        "\\{[ -~]{0,40}",
        Just(r#"{"type":"result"}"#.to_owned()),
    ]
}

proptest! {
    /// Whatever the lines, reading them makes events only from JSON objects, never
    /// panics, and in whatever pieces they arrive, gives the same events in the same
    /// order (nothing a read boundary could lose or reorder).
    #[test]
    fn no_line_is_lost_or_reordered(lines in proptest::collection::vec(any_line(), 0..40), cut in 0usize..40) {
        for format in [AgentFormat::ClaudeStreamJson, AgentFormat::CodexJson, AgentFormat::GeminiStreamJson] {
            let text = lines.join("\n");
            let (one_by_one, summary) = read_all(format, None, &text);
            let mut reader = AgentReader::new(format, None).unwrap();
            let cut = cut.min(lines.len());
            let mut whole = reader.read_lines(&lines[..cut].join("\n")).events;
            if cut < lines.len() {
                whole.extend(reader.read_lines(&lines[cut..].join("\n")).events);
            }
            whole.extend(reader.finish().events);
            prop_assert_eq!(&whole, &one_by_one);
            prop_assert_eq!(reader.summary(), &summary);
            let objects = lines.iter().filter(|l| l.trim().starts_with('{')).count() as u64;
            prop_assert!(summary.malformed_lines <= objects);
        }
    }
}
