//! Agent activity through the real daemon: a stand-in agent replays a captured JSON
//! stream (Claude Code's, Codex's), and warden must turn it into agent events, a
//! summary on the execution, a transcript, a session reply and the next turn's
//! `{agent_session_id}`, while keeping every line as output. The real agents against
//! mock model APIs are in `real_agents.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn testdata(name: &str) -> String {
    format!("{}/src/agent/testdata/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A profile whose agent prints a captured stream (and two lines of its own).
async fn replay_profile(d: &TestDaemon, name: &str, format: &str, capture: &str) {
    let profile = json!({
        "name": name, "provider": "local", "format": format, "env": {"CAPTURE": testdata(capture)},
        "command": ["sh", "-c", "echo starting; cat \"$CAPTURE\"; echo '{\"type\": broken'"],
        "continue_command": ["sh", "-c", "echo \"resuming $1\"; cat \"$CAPTURE\"", "sh", "{agent_session_id}"],
    });
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
}

async fn transcript_page(d: &TestDaemon, id: &Value, query: &str) -> Value {
    d.get_ok(&format!("/api/v1/executions/{id}/transcript?{query}")).await
}

#[actix_web::test]
async fn a_claude_stream_becomes_agent_events_a_summary_and_a_transcript() {
    let d = spawn_for_executions().await;
    replay_profile(&d, "replay", "claude-stream-json", "claude-tool-call.jsonl").await;
    let dir = tempfile::tempdir().unwrap();
    let created = d.exec_with(json!({"prompt": "say hello", "profile": "replay", "cwd": dir.path()})).await;
    assert_eq!(created["agent"]["format"], "claude-stream-json", "{created}");
    assert_eq!(created["agent"]["turns"], 0);
    let done = d.wait_final(&created["id"]).await;
    assert_eq!(done["status"], "succeeded");

    let agent = &done["agent"];
    assert_eq!(agent["agent_session_id"], "738afc72-6312-47ef-b0b9-a9c920f4d636");
    assert_eq!(agent["model"], "claude-opus-5-5");
    assert_eq!((agent["turns"].as_u64(), agent["tool_calls"].as_u64()), (Some(2), Some(1)));
    assert_eq!(agent["tokens"], json!({"input": 240, "output": 84, "cache_read": 60, "cache_write": 10}));
    assert_eq!(agent["cost_usd"], 0.002702);
    assert_eq!(agent["result"]["text"], "All done: hello.");
    assert_eq!(agent["malformed_lines"], 1, "the broken line is counted");
    // The same from a list and from a single read (stored JSON and decoded row).
    let listed = d.get_ok("/api/v1/executions?limit=1").await;
    assert_eq!(listed["items"][0]["agent"], *agent);

    // Every line is still output, in order: nothing the reader made of it is lost.
    let captured = std::fs::read_to_string(testdata("claude-tool-call.jsonl")).unwrap();
    let output = d.output_text(&created["id"]).await;
    let expected = format!("starting\n{}\n{{\"type\": broken", captured.trim_end());
    assert_eq!(output, expected);

    // The transcript, in pages.
    let first = transcript_page(&d, &created["id"], "limit=3").await;
    let mut entries = first["items"].as_array().unwrap().clone();
    let mut cursor = first["next_cursor"].as_str().expect("more than one page").to_owned();
    loop {
        let page = transcript_page(&d, &created["id"], &format!("limit=3&cursor={cursor}")).await;
        entries.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let kinds: Vec<&str> = entries.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, CLAUDE_TOOL_RUN);
    assert!(entries.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()));
    assert_eq!(entries[2]["data"]["input"]["command"], "echo hello-from-tool");
    assert_eq!(entries[3]["data"], json!({"call_id": "toolu_01", "ok": true, "summary": "hello-from-tool"}));
    assert!(entries.iter().all(|e| e["execution_id"] == created["id"]));

    // Live clients got the same events, between the execution's start and its end.
    let history = d.get_ok(&format!("/api/v1/events/history?execution_id={}&limit=500", created["id"])).await;
    let live: Vec<&str> = history["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    let started = live.iter().position(|k| *k == "execution.started").unwrap();
    let finished = live.iter().position(|k| *k == "execution.finished").unwrap();
    let first_agent = live.iter().position(|k| k.starts_with("agent.")).unwrap();
    let last_agent = live.iter().rposition(|k| k.starts_with("agent.")).unwrap();
    assert!(started < first_agent && last_agent < finished, "{live:?}");

    // In the terminal.
    let printed = warden(d.home.dir(), &["logs", "--transcript", &created["id"].to_string()]).await;
    assert!(printed.status.success(), "{}", stderr(&printed));
    let text = stdout(&printed);
    for expected in [
        "── claude-opus-5-5",
        "→ Bash echo hello-from-tool",
        "│ hello-from-tool",
        "All done: hello.",
        "✓ done: 2 turn(s), 0.3 s, $0.0027",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert!(!text.contains("\"type\""), "no raw JSON:\n{text}");
}

#[actix_web::test]
async fn a_session_replies_with_the_agents_answer_and_resumes_its_conversation() {
    let d = spawn_for_executions().await;
    replay_profile(&d, "replay-chat", "codex-json", "codex-tool-call.jsonl").await;
    let dir = tempfile::tempdir().unwrap();
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": "replay-chat", "cwd": dir.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = session["id"].clone();
    for text in ["hello", "again"] {
        expect_json(
            d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": text})).await,
            StatusCode::ACCEPTED,
        )
        .await;
    }
    let messages = wait_until("two agent replies", Duration::from_secs(30), || async {
        let messages =
            d.get_ok(&format!("/api/v1/sessions/{id}/messages?limit=50")).await["items"].as_array().unwrap().clone();
        (messages.iter().filter(|m| m["role"] == "agent").count() == 2).then_some(messages)
    })
    .await;
    let replies: Vec<&Value> = messages.iter().filter(|m| m["role"] == "agent").collect();
    // The agent's answer, not its JSON lines.
    assert_eq!(replies[0]["content"], "All done: hello.");
    assert_eq!(replies[1]["content"], "All done: hello.");
    // The second turn resumed Codex's own thread.
    let second = d.execution(&replies[1]["execution_id"]).await;
    let thread = "01a2370b-b390-75f1-9e22-75a19f93280b";
    assert_eq!(second["argv"][4], thread, "{second}");
    assert!(d.output_text(&replies[1]["execution_id"]).await.starts_with(&format!("resuming {thread}")));
    let session = d.get_ok(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(session["agent_session_id"], thread);
}

#[actix_web::test]
async fn a_text_execution_has_no_agent_and_no_transcript() {
    let d = spawn_for_executions().await;
    let done = d.exec("echo '{\"type\":\"result\",\"result\":\"not an agent\"}'").await;
    let done = d.wait_final(&done["id"]).await;
    assert_eq!(done["agent"], Value::Null);
    assert_eq!(transcript_page(&d, &done["id"], "").await, json!({"items": [], "next_cursor": null}));
    let printed = warden(d.home.dir(), &["logs", "--transcript", &done["id"].to_string()]).await;
    assert_eq!(printed.status.code(), Some(1));
    assert!(stderr(&printed).contains("writes plain text"), "{}", stderr(&printed));

    expect_problem(d.get("/api/v1/executions/999/transcript").await, StatusCode::NOT_FOUND, "not_found").await;
    for bad in ["cursor=x", "cursor=-1", "limit=0", "limit=501"] {
        expect_problem(
            d.get(&format!("/api/v1/executions/{}/transcript?{bad}", done["id"])).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
    }
    let bad_format = json!({"name": "x", "provider": "local", "command": ["x"], "format": "yaml"});
    expect_problem(d.post("/api/v1/profiles", &bad_format).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        .await;
}

#[actix_web::test]
async fn a_reached_daily_budget_holds_the_next_start_until_it_is_raised() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    // One run of the captured Claude stream costs $0.002702.
    let profile = json!({
        "name": "metered", "provider": "metered", "format": "claude-stream-json",
        "env": {"CAPTURE": testdata("claude-tool-call.jsonl")}, "command": ["sh", "-c", "cat \"$CAPTURE\""],
    });
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    let budget = json!({"max_concurrent": 4, "max_cost_usd_per_day": 0.004});
    let set = expect_json(d.put("/api/v1/providers/metered", &budget).await, StatusCode::OK).await;
    assert_eq!((set["max_cost_usd_per_day"].as_f64(), set["budget_reached"].as_bool()), (Some(0.004), Some(false)));
    let run = || d.exec_with(json!({"prompt": "p", "profile": "metered", "cwd": dir.path()}));

    // Under the budget, runs start; the one that reaches it still ends normally.
    for _ in 0..2 {
        let done = d.wait_final(&run().await["id"]).await;
        assert_eq!(done["status"], "succeeded");
    }
    let provider = d.get_ok("/api/v1/providers/metered").await;
    assert_eq!(provider["spend_today"]["cost_usd"], 0.005404);
    assert_eq!(provider["spend_today"]["input_tokens"], 2 * (240 + 60 + 10));
    assert_eq!(provider["spend_today"]["output_tokens"], 2 * 84);
    assert_eq!(provider["budget_reached"], true);
    let reached = d.get_ok("/api/v1/events/history?topics=provider.budget_reached&limit=10").await;
    assert_eq!(reached["items"].as_array().unwrap().len(), 1, "{reached}");
    assert_eq!(reached["items"][0]["data"]["name"], "metered");

    // The next start waits, saying why; other providers are not held.
    let held = run().await;
    let held = wait_until("the start to wait for the budget", Duration::from_secs(10), || async {
        let execution = d.execution(&held["id"]).await;
        (execution["waiting_for"] == "budget").then_some(execution)
    })
    .await;
    assert_eq!(held["status"], "queued");
    let other = d.exec("echo not metered").await;
    assert_eq!(d.wait_final(&other["id"]).await["status"], "succeeded");
    assert_eq!(d.execution(&held["id"]).await["status"], "queued");
    let metrics = d.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("warden_provider_spend_usd_today{provider=\"metered\"} 0.005404"), "{metrics}");
    assert!(metrics.contains("warden_provider_budget_reached{provider=\"metered\"} 1"), "{metrics}");
    let listed = stdout(&warden(d.home.dir(), &["provider", "ls"]).await);
    assert!(
        listed.lines().any(|l| l.starts_with("metered") && l.contains("$0.0054") && l.contains("REACHED")),
        "{listed}"
    );

    // Raised, it starts at once.
    let raised = warden(d.home.dir(), &["provider", "set", "metered", "--max-cost-usd-per-day", "1"]).await;
    assert!(raised.status.success(), "{}", stderr(&raised));
    let done = d.wait_final(&held["id"]).await;
    assert_eq!(done["status"], "succeeded");
    assert!(done.get("waiting_for").is_none(), "{done}");
    let provider = d.get_ok("/api/v1/providers/metered").await;
    assert_eq!((provider["max_concurrent"].as_u64(), provider["budget_reached"].as_bool()), (Some(4), Some(false)));

    // Spend is kept across a restart, and so are the limits.
    let d = d.restart().await;
    let provider = d.get_ok("/api/v1/providers/metered").await;
    assert_eq!(provider["spend_today"]["cost_usd"], 0.008106);
    assert_eq!(provider["max_cost_usd_per_day"], 1.0);
    let removed = warden(d.home.dir(), &["provider", "set", "metered", "--max-cost-usd-per-day", "none"]).await;
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(d.get_ok("/api/v1/providers/metered").await.get("max_cost_usd_per_day").is_none());

    for bad in
        [json!({"max_cost_usd_per_day": -1}), json!({"max_tokens_per_day": -5}), json!({"max_cost_usd_per_day": "x"})]
    {
        let response = d.put("/api/v1/providers/metered", &bad).await;
        assert!(response.status().is_client_error(), "{bad}: {}", response.status());
    }
}
