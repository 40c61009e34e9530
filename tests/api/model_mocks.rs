//! Local stand-ins for the model APIs the real agents call: Anthropic's Messages API
//! (streamed as server-sent events, as the API documents) for Claude Code, OpenAI's
//! Responses API for Codex and the Gemini API (`streamGenerateContent?alt=sse`) for the
//! Gemini CLI. A prompt with "run" in it gets one shell tool call
//! (`echo hello-from-tool`), then "All done: hello."; any other prompt gets an answer
//! that says how many prompts the conversation holds and which was first, so a test can
//! tell that a resumed conversation was resumed. Every request is kept for the test.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// One mock model API on 127.0.0.1.
pub struct MockModel {
    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

#[derive(Clone, Copy)]
enum Flavour {
    Anthropic,
    OpenAi,
    Gemini,
}

/// Tokens each mock response reports.
pub const INPUT_TOKENS: u64 = 120;
pub const OUTPUT_TOKENS: u64 = 42;
pub const CACHE_READ_TOKENS: u64 = 30;
pub const CACHE_WRITE_TOKENS: u64 = 5;

impl MockModel {
    pub async fn anthropic() -> MockModel {
        Self::start(Flavour::Anthropic).await
    }

    pub async fn openai() -> MockModel {
        Self::start(Flavour::OpenAi).await
    }

    pub async fn gemini() -> MockModel {
        Self::start(Flavour::Gemini).await
    }

    async fn start(flavour: Flavour) -> MockModel {
        let requests: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let kept = requests.clone();
        let server = HttpServer::new(move || {
            let kept = kept.clone();
            App::new().app_data(web::PayloadConfig::new(64 << 20)).default_service(web::to(
                move |request: HttpRequest, body: web::Bytes| {
                    let kept = kept.clone();
                    async move {
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        kept.lock().unwrap().push((request.path().to_owned(), body.clone()));
                        match flavour {
                            Flavour::Anthropic => anthropic(request.path(), &body),
                            Flavour::OpenAi => openai(request.path(), &body),
                            Flavour::Gemini => gemini(request.path(), &body),
                        }
                    }
                },
            ))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind the mock model API");
        let url = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        MockModel { url, requests }
    }

    /// The model requests so far (path and JSON body), in order.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

/// What the conversation asks for: the user's prompts, oldest first, and what the
/// last one wants.
struct Conversation {
    prompts: Vec<String>,
    /// The id a tool call for the last prompt has, and its result if it was run.
    call_id: String,
    result: Option<String>,
}

impl Conversation {
    fn reply(&self) -> Reply {
        let last = self.prompts.last().cloned().unwrap_or_default();
        if !last.contains("run") {
            let first = self.prompts.first().cloned().unwrap_or_default();
            return Reply::Text(format!("You have said {} thing(s); the first was: {first}", self.prompts.len()));
        }
        match &self.result {
            Some(_) => Reply::Text("All done: hello.".into()),
            None => Reply::Tool { id: self.call_id.clone() },
        }
    }
}

enum Reply {
    Text(String),
    Tool { id: String },
}

fn sse(events: &[(&str, Value)]) -> HttpResponse {
    let body: String = events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect();
    HttpResponse::Ok().content_type("text/event-stream").body(body)
}

/// A Messages API text block's text, or a string content.
fn texts(content: &Value) -> Vec<String> {
    match content {
        Value::String(s) => vec![s.clone()],
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| {
                b["type"] == "text" || b["type"] == "input_text" || (b.get("type").is_none() && b.get("text").is_some())
            })
            .filter_map(|b| b["text"].as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The user's own words in a message: not the reminders and context agents add.
fn prompt_of(content: &Value) -> Option<String> {
    let own: Vec<String> = texts(content).into_iter().filter(|t| !t.trim_start().starts_with('<')).collect();
    (!own.is_empty()).then(|| own.join("\n"))
}

fn anthropic(path: &str, body: &Value) -> HttpResponse {
    if path.ends_with("/count_tokens") {
        return HttpResponse::Ok().json(json!({"input_tokens": 10}));
    }
    if !path.ends_with("/v1/messages") {
        return HttpResponse::Ok().json(json!({}));
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let is_result = |m: &Value| m["content"].as_array().is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
    let prompts: Vec<(usize, String)> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m["role"] == "user" && !is_result(m))
        .filter_map(|(i, m)| prompt_of(&m["content"]).map(|p| (i, p)))
        .collect();
    let call_id = format!("toolu_w{}", prompts.last().map_or(0, |(i, _)| *i));
    let result = messages.iter().flat_map(|m| m["content"].as_array().cloned().unwrap_or_default()).find_map(|b| {
        (b["type"] == "tool_result" && b["tool_use_id"] == call_id.as_str()).then(|| b["content"].to_string())
    });
    let conversation = Conversation { prompts: prompts.into_iter().map(|(_, p)| p).collect(), call_id, result };
    let model = body["model"].as_str().unwrap_or("claude-mock").to_owned();
    let (block, stop) = match conversation.reply() {
        Reply::Text(text) => (json!({"type": "text", "text": text}), "end_turn"),
        Reply::Tool { id } => (
            json!({"type": "tool_use", "id": id, "name": "Bash",
                   "input": {"command": "echo hello-from-tool", "description": "Say hello"}}),
            "tool_use",
        ),
    };
    let usage = json!({"input_tokens": INPUT_TOKENS, "output_tokens": 1,
        "cache_read_input_tokens": CACHE_READ_TOKENS, "cache_creation_input_tokens": CACHE_WRITE_TOKENS});
    if body["stream"] != true {
        let mut usage = usage;
        usage["output_tokens"] = json!(OUTPUT_TOKENS);
        return HttpResponse::Ok()
            .json(json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop, "stop_sequence": null, "usage": usage}));
    }
    let (start, delta) = match block["type"].as_str() {
        Some("text") => (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": block["text"]})),
        _ => (
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
            json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
        ),
    };
    sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_{}", messages.len()),
            "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": usage}}),
        ),
        ("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": start})),
        ("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": delta})),
        ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": OUTPUT_TOKENS}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ])
}

fn openai(path: &str, body: &Value) -> HttpResponse {
    if !path.ends_with("/responses") {
        return HttpResponse::Ok().json(json!({"data": [], "models": []}));
    }
    let items = body["input"].as_array().cloned().unwrap_or_default();
    let prompts: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item["type"] == "message" && item["role"] == "user")
        .filter_map(|(i, item)| prompt_of(&item["content"]).map(|p| (i, p)))
        .collect();
    let call_id = format!("call_w{}", prompts.last().map_or(0, |(i, _)| *i));
    let result = items.iter().find_map(|item| {
        (item["type"] == "function_call_output" && item["call_id"] == call_id.as_str())
            .then(|| item["output"].to_string())
    });
    let conversation = Conversation { prompts: prompts.into_iter().map(|(_, p)| p).collect(), call_id, result };
    let tools: Vec<&str> = body["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    let item = match conversation.reply() {
        Reply::Text(text) => json!({"type": "message", "role": "assistant", "id": "msg_mock",
            "content": [{"type": "output_text", "text": text}]}),
        Reply::Tool { id } => {
            let (name, arguments) = if tools.contains(&"exec_command") {
                ("exec_command", json!({"cmd": "echo hello-from-tool"}))
            } else if tools.contains(&"shell_command") {
                ("shell_command", json!({"command": "echo hello-from-tool"}))
            } else {
                ("shell", json!({"command": ["bash", "-lc", "echo hello-from-tool"]}))
            };
            json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id, "name": name,
                   "arguments": arguments.to_string()})
        }
    };
    sse(&[
        ("response.created", json!({"type": "response.created", "response": {"id": "resp_mock"}})),
        ("response.output_item.done", json!({"type": "response.output_item.done", "item": item})),
        (
            "response.completed",
            json!({"type": "response.completed", "response": {"id": "resp_mock", "usage": {
            "input_tokens": INPUT_TOKENS, "input_tokens_details": {"cached_tokens": CACHE_READ_TOKENS},
            "output_tokens": OUTPUT_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}}}),
        ),
    ])
}

fn gemini(path: &str, body: &Value) -> HttpResponse {
    let usage = json!({"promptTokenCount": INPUT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
        "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS, "cachedContentTokenCount": CACHE_READ_TOKENS});
    if path.ends_with(":countTokens") {
        return HttpResponse::Ok().json(json!({"totalTokens": 10}));
    }
    if path.ends_with(":generateContent") {
        // The CLI's own helper calls (choosing a model, who speaks next): a JSON answer
        // that satisfies each.
        let answer = json!({"complexity_reasoning": "simple", "complexity_score": 1, "reasoning": "done",
            "next_speaker": "user"});
        return HttpResponse::Ok().json(json!({"candidates": [{"content": {"role": "model",
            "parts": [{"text": answer.to_string()}]}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage}));
    }
    if !path.ends_with(":streamGenerateContent") {
        return HttpResponse::Ok().json(json!({}));
    }
    let contents = body["contents"].as_array().cloned().unwrap_or_default();
    let is_response =
        |c: &Value| c["parts"].as_array().is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()));
    let prompts: Vec<(usize, String)> = contents
        .iter()
        .enumerate()
        .filter(|(_, c)| c["role"] == "user" && !is_response(c))
        .filter_map(|(i, c)| prompt_of(&c["parts"]).map(|p| (i, p)))
        .collect();
    let last = prompts.last().map_or(0, |(i, _)| *i);
    // Gemini calls carry no id of ours: a response after the last prompt is its result.
    let result = contents[last.min(contents.len())..].iter().find(|c| is_response(c)).map(|c| c.to_string());
    let conversation =
        Conversation { prompts: prompts.into_iter().map(|(_, p)| p).collect(), call_id: String::new(), result };
    let part = match conversation.reply() {
        Reply::Text(text) => json!({"text": text}),
        Reply::Tool { .. } => json!({"functionCall": {"name": "run_shell_command",
            "args": {"command": "echo hello-from-tool", "description": "Say hello"}}}),
    };
    let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage, "modelVersion": "gemini-mock"});
    HttpResponse::Ok().content_type("text/event-stream").body(format!("data: {chunk}\r\n\r\n"))
}
