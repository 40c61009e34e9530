//! Executions over the API: creation, validation, output capture, retry, listing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn an_execution_runs_and_its_output_is_kept_in_order() {
    let d = spawn_for_executions().await;
    let created = d.exec("echo one; echo two >&2; echo three; printf 'no newline'").await;
    assert_eq!(created["profile"], "shell");
    assert_eq!(created["provider"], "local");
    assert_eq!(created["argv"], json!(["sh", "-c", "echo one; echo two >&2; echo three; printf 'no newline'"]));
    assert!(matches!(created["status"].as_str(), Some("queued" | "running")), "{created}");
    let id = &created["id"];

    let done = d.wait_final(id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["exit_code"], 0);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert_eq!(done["queue_position"], Value::Null);

    let lines = d.output(id).await;
    let numbers: Vec<u64> = lines.iter().map(|l| l["n"].as_u64().unwrap()).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    let stdout: Vec<&str> =
        lines.iter().filter(|l| l["stream"] == "stdout").map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(stdout, vec!["one", "three", "no newline"], "the partial last line is kept");
    let stderr: Vec<&str> =
        lines.iter().filter(|l| l["stream"] == "stderr").map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(stderr, vec!["two"]);
}

#[actix_web::test]
async fn a_failing_command_is_failed_with_its_exit_code() {
    let d = spawn_for_executions().await;
    let id = d.exec("echo about to fail; exit 3").await["id"].clone();
    let done = d.wait_final(&id).await;
    assert_eq!((done["status"].as_str(), done["exit_code"].as_i64()), (Some("failed"), Some(3)));
    assert!(done["error"].as_str().unwrap().contains("code 3"));
}

#[actix_web::test]
async fn a_program_that_does_not_exist_fails_with_a_reason() {
    let d = spawn_for_executions().await;
    let profile = json!({"name": "ghost", "provider": "local", "command": ["warden-no-such-program-xyz", "{prompt}"]});
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    let id = d.exec_with(json!({"prompt": "x", "profile": "ghost", "cwd": "/tmp"})).await["id"].clone();
    let done = d.wait_final(&id).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "command not found: warden-no-such-program-xyz");
    assert_eq!(done["exit_code"], Value::Null);
    // The slot it took is free again: the next one runs.
    let next = d.exec("true").await["id"].clone();
    assert_eq!(d.wait_final(&next).await["status"], "succeeded");
}

#[actix_web::test]
async fn a_prompt_is_passed_verbatim_as_one_argument() {
    let d = spawn_for_executions().await;
    let profile = json!({"name": "echoer", "provider": "local", "command": ["printf", "%s", "{prompt}"]});
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    let prompt =
        "it's \"quoted\" $(touch /tmp/warden-pwned) `id` ; rm -rf / && echo *\nsecond line\t→ ünïcødé 🚀 {workspace}";
    let created = d.exec_with(json!({"prompt": prompt, "profile": "echoer", "cwd": "/tmp"})).await;
    assert_eq!(created["argv"], json!(["printf", "%s", prompt]));
    assert_eq!(created["prompt"], prompt);
    assert_eq!(d.wait_final(&created["id"]).await["status"], "succeeded");
    assert_eq!(d.output_text(&created["id"]).await, prompt);
    assert!(!std::path::Path::new("/tmp/warden-pwned").exists(), "nothing went through a shell");
}

#[actix_web::test]
async fn the_process_gets_its_environment_cwd_and_no_stdin() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let ws = json!({"name": "proj", "path": dir.path()});
    expect_json(d.post("/api/v1/workspaces", &ws).await, StatusCode::CREATED).await;
    let profile = json!({"name": "envy", "provider": "local", "command": ["sh", "-c", "{prompt}"],
                         "env": {"FROM_PROFILE": "p", "OVERRIDDEN": "profile"}});
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    // The agent's token is its own, never the owner's.
    let script = format!(
        "pwd; echo $WARDEN_EXECUTION_ID; echo $WARDEN_URL; echo ${{#WARDEN_TOKEN}}; \
         [ \"$WARDEN_TOKEN\" = {} ] && echo owner-token; echo $FROM_PROFILE $FROM_REQUEST $OVERRIDDEN; cat; \
         echo stdin-closed",
        d.token
    );
    let created = d
        .exec_with(json!({"prompt": script, "profile": "envy", "workspace": "proj",
                          "env": {"FROM_REQUEST": "r", "OVERRIDDEN": "request"}}))
        .await;
    assert_eq!(created["workspace"], "proj");
    let done = d.wait_final(&created["id"]).await;
    assert_eq!(done["status"], "succeeded");
    let expected = [
        std::fs::canonicalize(dir.path()).unwrap().display().to_string(),
        created["id"].to_string(),
        d.base_url.clone(),
        "67".into(),
        "p r request".into(),
        "stdin-closed".into(),
    ]
    .join("\n");
    assert_eq!(d.output_text(&created["id"]).await, expected);
}

#[actix_web::test]
async fn a_hundred_thousand_lines_are_all_kept_in_order() {
    let d = spawn_for_executions().await;
    let id = d.exec("seq 1 100000").await["id"].clone();
    assert_eq!(d.wait_final(&id).await["status"], "succeeded");
    let lines = d.output(&id).await;
    assert_eq!(lines.len(), 100_000);
    // Group commit: a read chunk is one write, and many writes share one commit.
    let store = d.get_ok("/api/v1/status").await["counts"]["store"].clone();
    let (commits, writes) = (store["commits"].as_u64().unwrap(), store["writes"].as_u64().unwrap());
    assert!(commits < 2_000, "100,000 lines took {commits} commits: lines are not batched");
    assert!(writes >= commits, "{store}");
    for (i, line) in lines.iter().enumerate() {
        let expected = (i + 1).to_string();
        assert_eq!((line["n"].as_u64(), line["text"].as_str()), (Some(i as u64 + 1), Some(expected.as_str())));
    }
}

#[actix_web::test]
async fn long_lines_are_split_and_invalid_utf8_is_kept() {
    let d = spawn_for_executions().await;
    // 200,000 'é' (400,000 bytes) on one line, then bytes that are not UTF-8.
    let script = "python3 -c \"import sys; sys.stdout.write('é' * 200000 + '\\n'); sys.stdout.flush(); \
                  sys.stdout.buffer.write(b'bad \\xff\\xfe bytes\\n')\"";
    let id = d.exec(script).await["id"].clone();
    assert_eq!(d.wait_final(&id).await["status"], "succeeded");
    let lines = d.output(&id).await;
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    let (long, last) = texts.split_at(texts.len() - 1);
    assert!(long.len() >= 7, "400,000 bytes make at least 7 lines of 64 KiB, got {}", long.len());
    assert!(long.iter().all(|t| t.len() <= 64 * 1024), "no line is over 64 KiB");
    assert_eq!(long.concat(), "é".repeat(200_000), "splitting cut no character and lost nothing");
    assert_eq!(last[0], "bad \u{fffd}\u{fffd} bytes");
}

#[actix_web::test]
async fn retry_makes_a_new_execution_of_the_same_request() {
    let d = spawn_for_executions().await;
    let first = d.exec_with(json!({"prompt": "echo $X", "cwd": "/tmp", "env": {"X": "again"}, "timeout_s": 30})).await;
    d.wait_final(&first["id"]).await;
    let retried = expect_json(
        d.post(&format!("/api/v1/executions/{}/retry", first["id"]), &json!({})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_ne!(retried["id"], first["id"]);
    assert_eq!(retried["retry_of"], first["id"]);
    for field in ["prompt", "profile", "cwd", "argv", "timeout_s"] {
        assert_eq!(retried[field], first[field], "{field}");
    }
    assert_eq!(d.wait_final(&retried["id"]).await["status"], "succeeded");
    assert_eq!(d.output_text(&retried["id"]).await, "again", "the request's env came along");

    let running = d.exec("sleep 30").await["id"].clone();
    let problem = expect_problem(
        d.post(&format!("/api/v1/executions/{running}/retry"), &json!({})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    assert!(matches!(problem["current_status"].as_str(), Some("queued" | "running")), "{problem}");
    expect_problem(d.post("/api/v1/executions/999/retry", &json!({})).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn bad_execution_requests_are_problems_and_create_nothing() {
    let d = spawn_for_executions().await;
    let cases = [
        (json!({"prompt": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"prompt": "x", "cwd": "/tmp", "workspace": "w"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"prompt": "x", "cwd": "/no/such/dir"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"prompt": "x", "cwd": "relative"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"prompt": "x", "cwd": "/tmp", "profile": "nope"}), StatusCode::NOT_FOUND, "not_found"),
        (json!({"prompt": "x", "workspace": "nope"}), StatusCode::NOT_FOUND, "not_found"),
        (
            json!({"prompt": "x", "cwd": "/tmp", "env": {"1BAD": "v"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (json!({"prompt": "x", "cwd": "/tmp", "timeout_s": 0}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"prompt": "x\u{0}y", "cwd": "/tmp"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"prompt": 5, "cwd": "/tmp"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"cwd": "/tmp"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (json!({"prompt": "x", "cwd": "/tmp", "shell": true}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let problem = expect_problem(d.post("/api/v1/executions", &body).await, status, code).await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{body}");
    }
    let list = d.get_ok("/api/v1/executions").await;
    assert_eq!(list["items"], json!([]));
    // Ids were not used up by the refused requests.
    assert_eq!(d.exec("true").await["id"], 1);
}

#[actix_web::test]
async fn unknown_executions_and_bad_parameters_are_problems() {
    let d = spawn_for_executions().await;
    expect_problem(d.get("/api/v1/executions/42").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/executions/abc").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/executions/42/output").await, StatusCode::NOT_FOUND, "not_found").await;
    for action in ["cancel", "pause", "resume"] {
        expect_problem(
            d.post(&format!("/api/v1/executions/42/{action}"), &json!({})).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    expect_problem(d.get("/api/v1/executions?status=bogus").await, StatusCode::BAD_REQUEST, "invalid_request").await;
    expect_problem(d.get("/api/v1/executions?cursor=x").await, StatusCode::BAD_REQUEST, "invalid_request").await;
    let id = d.exec("true").await["id"].clone();
    d.wait_final(&id).await;
    expect_problem(
        d.get(&format!("/api/v1/executions/{id}/output?limit=0")).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    expect_problem(
        d.get(&format!("/api/v1/executions/{id}/output?after=-1")).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[actix_web::test]
async fn final_executions_refuse_control_with_their_state() {
    let d = spawn_for_executions().await;
    let id = d.exec("true").await["id"].clone();
    d.wait_final(&id).await;
    for action in ["cancel", "pause", "resume"] {
        let problem = expect_problem(
            d.post(&format!("/api/v1/executions/{id}/{action}"), &json!({})).await,
            StatusCode::CONFLICT,
            "invalid_transition",
        )
        .await;
        assert_eq!(problem["current_status"], "succeeded");
        assert_eq!(problem["execution"]["id"], id);
    }
}

#[actix_web::test]
async fn executions_are_listed_newest_first_with_filters_and_pages() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    expect_json(d.post("/api/v1/workspaces", &json!({"name": "ws", "path": dir.path()})).await, StatusCode::CREATED)
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = if i % 2 == 0 {
            json!({"prompt": "true", "workspace": "ws"})
        } else {
            json!({"prompt": "false", "cwd": "/tmp"})
        };
        let id = d.exec_with(body).await["id"].clone();
        d.wait_final(&id).await;
        ids.push(id.as_i64().unwrap());
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/executions?limit=2".to_owned();
    loop {
        let page = d.get_ok(&path).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/executions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");

    let failed = d.get_ok("/api/v1/executions?status=failed").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 2);
    let in_ws = d.get_ok("/api/v1/executions?workspace=ws&status=succeeded,failed").await;
    assert_eq!(in_ws["items"].as_array().unwrap().len(), 3);
    assert!(in_ws["items"].as_array().unwrap().iter().all(|e| e["workspace"] == "ws"));
    let by_provider = d.get_ok("/api/v1/executions?provider=local&profile=shell").await;
    assert_eq!(by_provider["items"].as_array().unwrap().len(), 5);
    assert_eq!(d.get_ok("/api/v1/executions?provider=other").await["items"], json!([]));
}

#[actix_web::test]
async fn the_output_tail_starts_a_viewer_at_the_end() {
    let d = spawn_for_executions().await;
    let execution = d.exec("seq 1 50").await;
    d.wait_final(&execution["id"]).await;
    let tail = d.get_ok(&format!("/api/v1/executions/{}/output?tail=3", execution["id"])).await;
    let texts: Vec<_> = tail["items"].as_array().unwrap().iter().map(|l| l["text"].clone()).collect();
    assert_eq!(texts, vec![json!("48"), json!("49"), json!("50")]);
    assert!(tail["next_cursor"].is_null());
    for bad in ["tail=0", "tail=10001", "tail=3&after=1", "tail=3&limit=5"] {
        let response = d.get(&format!("/api/v1/executions/{}/output?{bad}", execution["id"])).await;
        expect_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    expect_problem(d.get("/api/v1/executions/999/output?tail=3").await, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn a_list_page_shows_each_change_as_soon_as_its_event_is_out() {
    let d = spawn_for_executions().await;
    let (mut ws, _) = d.ws().await;
    ws.send_json(json!({"type": "subscribe", "topics": ["execution.*"]})).await;
    for round in 0..10 {
        // Asked twice while nothing runs: the second answer may be the kept page.
        let before = d.get_ok("/api/v1/executions?limit=5").await;
        assert_eq!(d.get_ok("/api/v1/executions?limit=5").await, before);
        let id = d.exec(&format!("echo {round}")).await["id"].clone();
        ws.events_until(|e| e["type"] == "execution.finished" && e["execution_id"] == id).await;
        // At once after the event: the execution and the page show it final.
        assert_eq!(d.execution(&id).await["status"], "succeeded", "round {round}");
        let page = d.get_ok("/api/v1/executions?limit=5").await;
        let first = &page["items"][0];
        assert_eq!(first["id"], id, "round {round}: the newest execution comes first: {page}");
        assert_eq!(first["status"], "succeeded", "round {round}: {first}");
        // Other filters and limits are answered for themselves.
        let filtered = d.get_ok("/api/v1/executions?limit=5&status=failed").await;
        assert!(filtered["items"].as_array().unwrap().is_empty(), "{filtered}");
        let one = d.get_ok("/api/v1/executions?limit=1").await;
        assert_eq!(one["items"].as_array().unwrap().len(), 1);
        assert_eq!(one["items"][0]["id"], id);
    }
    // A running execution is shown as it is now, not as a page kept from before.
    let running = d.exec("sleep 30").await["id"].clone();
    wait_until("the execution to be running in the list", Duration::from_secs(10), || async {
        let page = d.get_ok("/api/v1/executions?limit=5").await;
        (page["items"][0]["id"] == running && page["items"][0]["status"] == "running").then_some(())
    })
    .await;
    d.post(&format!("/api/v1/executions/{running}/cancel"), &json!({})).await;
    ws.events_until(|e| e["type"] == "execution.finished" && e["execution_id"] == running).await;
    assert_eq!(d.get_ok("/api/v1/executions?limit=5").await["items"][0]["status"], "cancelled");
    assert_eq!(d.execution(&running).await["status"], "cancelled");
}

#[actix_web::test]
async fn outside_a_session_the_session_uuid_placeholder_is_a_fresh_uuid() {
    let d = spawn_for_executions().await;
    let profile = json!({"name": "resumable", "provider": "local", "command": ["echo", "id={session_uuid}"]});
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let run = d.exec_with(json!({"prompt": "x", "profile": "resumable", "cwd": std::env::temp_dir()})).await;
        d.wait_final(&run["id"]).await;
        let text = d.output_text(&run["id"]).await;
        let id = text.strip_prefix("id=").unwrap_or("");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{text:?} holds no UUID");
        seen.push(id.to_owned());
    }
    assert_ne!(seen[0], seen[1], "each execution gets its own");
}
