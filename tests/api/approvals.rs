//! Approvals: first response wins across HTTP and WebSocket, gated executions,
//! deadlines (also across a restart), long polls and the Claude Code hook.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

async fn request(d: &TestDaemon, body: Value) -> Value {
    expect_json(d.post("/api/v1/approvals", &body).await, StatusCode::CREATED).await
}

async fn decide(d: &TestDaemon, id: &Value, decision: &str, who: &str) -> reqwest::Response {
    d.request(Method::POST, &format!("/api/v1/approvals/{id}"))
        .header("X-Warden-Client", who)
        .json(&json!({"decision": decision, "reason": format!("{who} says {decision}")}))
        .send()
        .await
        .unwrap()
}

async fn gated_profile(d: &TestDaemon) {
    let profile =
        json!({"name": "careful", "provider": "local", "command": ["sh", "-c", "{prompt}"], "approval": "always"});
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
}

#[actix_web::test]
async fn a_hundred_racing_answers_make_exactly_one_winner() {
    let d = spawn_with(|c| c.max_clients = 60).await;
    let approval = request(&d, json!({"title": "rm -rf build", "details": {"cmd": "rm -rf build"}})).await;
    let id = approval["id"].clone();
    assert_eq!(approval["status"], "pending");

    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(d.ws().await.0);
    }
    let http = (0..50).map(|i| {
        let d = &d;
        let id = id.clone();
        async move {
            let decision = if i % 2 == 0 { "approve" } else { "deny" };
            let response = decide(d, &id, decision, &format!("http-{i}")).await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            match status {
                StatusCode::OK => (true, body),
                StatusCode::CONFLICT => {
                    assert_eq!(body["code"], "already_decided", "{body}");
                    (false, body["approval"].clone())
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
    });
    let ws = sockets.iter_mut().enumerate().map(|(i, socket)| {
        let id = id.clone();
        async move {
            let decision = if i % 2 == 0 { "deny" } else { "approve" };
            socket.send_json(json!({"type": "decide", "approval_id": id, "decision": decision})).await;
            loop {
                let message = socket.next_json().await.unwrap();
                if message["type"] == "decision" {
                    assert_eq!(message["approval_id"], id);
                    return (message["won"].as_bool().unwrap(), message["approval"].clone());
                }
            }
        }
    });
    let (http, ws) = futures_util::join!(futures_util::future::join_all(http), futures_util::future::join_all(ws));
    let answers: Vec<(bool, Value)> = http.into_iter().chain(ws).collect();
    let winners: Vec<&Value> = answers.iter().filter(|(won, _)| *won).map(|(_, a)| a).collect();
    assert_eq!(winners.len(), 1, "exactly one answer wins");
    let winner = winners[0].clone();
    assert!(answers.iter().all(|(_, a)| *a == winner), "every loser is told the same winner");

    let stored = d.get_ok(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(stored, winner, "what is stored is the winner");
    assert!(matches!(stored["status"].as_str(), Some("approved" | "denied")));
    let decided = d.get_ok("/api/v1/events/history?topics=approval.decided&limit=1000").await;
    assert_eq!(decided["items"].as_array().unwrap().len(), 1, "exactly one approval.decided event");
    assert_eq!(decided["items"][0]["data"], winner);
    assert_eq!(decided["items"][0]["priority"], "high");
}

#[actix_web::test]
async fn an_approved_gated_execution_runs() {
    let d = spawn_for_executions().await;
    gated_profile(&d).await;
    let created = d.exec_with(json!({"prompt": "echo approved work", "profile": "careful", "cwd": "/tmp"})).await;
    assert_eq!(created["status"], "pending_approval");
    let approval_id = created["approval_id"].clone();
    assert!(approval_id.is_i64(), "{created}");
    let approval = d.get_ok(&format!("/api/v1/approvals/{approval_id}")).await;
    assert_eq!(approval["execution_id"], created["id"]);
    assert_eq!(approval["source"], "warden");
    assert!(
        approval["title"].as_str().unwrap().contains("careful")
            && approval["title"].as_str().unwrap().contains("echo approved work")
    );
    assert_eq!(approval["details"]["argv"], created["argv"]);
    let provider = d.get_ok("/api/v1/providers/local").await;
    assert_eq!(provider["pending_approval"], 1);

    expect_json(decide(&d, &approval_id, "approve", "me").await, StatusCode::OK).await;
    let done = d.wait_final(&created["id"]).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(d.output_text(&created["id"]).await, "approved work");
}

#[actix_web::test]
async fn a_denied_gated_execution_never_spawns_a_process() {
    let d = spawn_for_executions().await;
    gated_profile(&d).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let created = d
        .exec_with(json!({"prompt": format!("touch {}", marker.display()), "profile": "careful", "cwd": "/tmp"}))
        .await;
    expect_json(decide(&d, &created["approval_id"], "deny", "reviewer").await, StatusCode::OK).await;
    let done = d.wait_final(&created["id"]).await;
    assert_eq!(done["status"], "denied");
    assert_eq!(done["error"], "denied by owner via reviewer: reviewer says deny");
    assert_eq!(done["started_at"], Value::Null);
    assert!(!marker.exists(), "no process ran");

    // Retrying a denied execution asks again.
    let retried = expect_json(
        d.post(&format!("/api/v1/executions/{}/retry", created["id"]), &json!({})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(retried["status"], "pending_approval");
    assert_ne!(retried["approval_id"], created["approval_id"]);
}

#[actix_web::test]
async fn an_unanswered_gated_execution_is_denied_at_the_deadline() {
    let d = spawn_with(|c| c.approval_timeout = Duration::from_secs(1)).await;
    gated_profile(&d).await;
    let created = d.exec_with(json!({"prompt": "true", "profile": "careful", "cwd": "/tmp"})).await;
    let done = d.wait_final(&created["id"]).await;
    assert_eq!(done["status"], "denied");
    assert!(done["error"].as_str().unwrap().contains("expired"), "{done}");
    let approval = d.get_ok(&format!("/api/v1/approvals/{}", created["approval_id"])).await;
    assert_eq!((approval["status"].as_str(), approval["default"].as_str()), (Some("expired"), Some("deny")));
    let late = decide(&d, &created["approval_id"], "approve", "latecomer").await;
    let problem = expect_problem(late, StatusCode::CONFLICT, "expired").await;
    assert_eq!(problem["approval"]["status"], "expired");
}

#[actix_web::test]
async fn deadlines_survive_a_restart() {
    let d = spawn_for_executions().await;
    gated_profile(&d).await;
    let soon = request(&d, json!({"title": "soon", "timeout_s": 2})).await;
    let later = request(&d, json!({"title": "later", "timeout_s": 600, "default": "approve"})).await;
    let gated = d.exec_with(json!({"prompt": "echo after restart", "profile": "careful", "cwd": "/tmp"})).await;
    let d = d.restart().await;
    // Re-armed: the short one expires on its own, with no request touching it.
    let expired = wait_until("the deadline", Duration::from_secs(20), || async {
        let a = d.get_ok(&format!("/api/v1/approvals/{}", soon["id"])).await;
        (a["status"] == "expired").then_some(a)
    })
    .await;
    assert_eq!(expired["decided_by"], "deadline");
    assert_eq!(d.get_ok(&format!("/api/v1/approvals/{}", later["id"])).await["status"], "pending");
    // The gated execution waits on through the restart and runs once approved.
    assert_eq!(d.execution(&gated["id"]).await["status"], "pending_approval");
    expect_json(decide(&d, &gated["approval_id"], "approve", "me").await, StatusCode::OK).await;
    assert_eq!(d.wait_final(&gated["id"]).await["status"], "succeeded");
}

#[actix_web::test]
async fn each_deadline_fires_on_its_own_whatever_order_they_were_requested_in() {
    let d = spawn_for_executions().await;
    let later = request(&d, json!({"title": "later", "timeout_s": 600})).await;
    let decided = request(&d, json!({"title": "decided in time", "timeout_s": 1})).await;
    let sooner = request(&d, json!({"title": "sooner", "timeout_s": 2, "default": "approve"})).await;
    expect_json(decide(&d, &decided["id"], "deny", "me").await, StatusCode::OK).await;
    let expired = wait_until("the sooner deadline", Duration::from_secs(20), || async {
        let a = d.get_ok(&format!("/api/v1/approvals/{}", sooner["id"])).await;
        (a["status"] == "expired").then_some(a)
    })
    .await;
    assert_eq!((expired["decided_by"].as_str(), expired["default"].as_str()), (Some("deadline"), Some("approve")));
    // The one decided before its deadline keeps its answer; the long one still waits.
    let kept = d.get_ok(&format!("/api/v1/approvals/{}", decided["id"])).await;
    assert_eq!((kept["status"].as_str(), kept["decided_by"].as_str()), (Some("denied"), Some("owner via me")));
    assert_eq!(d.get_ok(&format!("/api/v1/approvals/{}", later["id"])).await["status"], "pending");
    let late = decide(&d, &sooner["id"], "deny", "latecomer").await;
    assert_eq!(expect_problem(late, StatusCode::CONFLICT, "expired").await["approval"]["decided_by"], "deadline");
}

#[actix_web::test]
async fn an_overdue_approval_expires_at_start() {
    let d = spawn_for_executions().await;
    let approval = request(&d, json!({"title": "overdue", "timeout_s": 1, "default": "approve"})).await;
    let stopped = d.stop().await;
    // Stay down until its deadline (and a timer's slack) has passed.
    let deadline: chrono::DateTime<chrono::Utc> = serde_json::from_value(approval["expires_at"].clone()).unwrap();
    wait_until("the deadline to pass", Duration::from_secs(10), || async {
        (chrono::Utc::now() > deadline + chrono::Duration::milliseconds(300)).then_some(())
    })
    .await;
    // The stopped daemon wrote nothing after its stop: the deadline is the next start's.
    let db = rusqlite::Connection::open(stopped.home.dir().join("warden.db")).unwrap();
    let status: String =
        db.query_row("SELECT status FROM approvals WHERE id = ?1", [approval["id"].as_i64()], |r| r.get(0)).unwrap();
    assert_eq!(status, "pending", "the stopped daemon expired the approval after its stop");
    drop(db);
    let d = stopped.start().await;
    let expired = wait_until("expiry at start", Duration::from_secs(10), || async {
        let a = d.get_ok(&format!("/api/v1/approvals/{}", approval["id"])).await;
        (a["status"] == "expired").then_some(a)
    })
    .await;
    assert_eq!(expired["default"], "approve");
}

#[actix_web::test]
async fn a_long_poll_answers_as_soon_as_the_decision_lands() {
    let d = spawn_for_executions().await;
    let approval = request(&d, json!({"title": "wait for me"})).await;
    let id = approval["id"].clone();
    let poll_path = format!("/api/v1/approvals/{id}?wait=60");
    let poll = d.get(&poll_path);
    let answer = async {
        // Give the poll time to reach the arbiter (waiters are not observable from
        // outside); the assertion below holds either way, this makes it a real wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = Instant::now();
        expect_json(decide(&d, &id, "approve", "quick").await, StatusCode::OK).await;
        sent
    };
    let (polled, sent) = futures_util::join!(poll, answer);
    let answered = Instant::now();
    let approval = expect_json(polled, StatusCode::OK).await;
    assert_eq!(approval["status"], "approved");
    assert!(
        answered.duration_since(sent) < Duration::from_secs(5),
        "the poll answered on the decision, not at its wait"
    );

    // A decided approval answers a long poll at once.
    let started = Instant::now();
    d.get_ok(&format!("/api/v1/approvals/{id}?wait=60")).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    expect_problem(
        d.get(&format!("/api/v1/approvals/{id}?wait=301")).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
}

#[actix_web::test]
async fn bad_approval_requests_and_decisions_are_problems() {
    let d = spawn_for_executions().await;
    for body in [json!({"title": ""}), json!({"title": "x", "timeout_s": 0}), json!({"title": "x", "timeout_s": 86401})]
    {
        expect_problem(d.post("/api/v1/approvals", &body).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            .await;
    }
    for body in [json!({"title": "x", "default": "maybe"}), json!({"details": {}}), json!({"title": "x", "colour": 1})]
    {
        expect_problem(d.post("/api/v1/approvals", &body).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            .await;
    }
    let approval = request(&d, json!({"title": "x"})).await;
    let bad = d.post(&format!("/api/v1/approvals/{}", approval["id"]), &json!({"decision": "perhaps"})).await;
    expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    expect_problem(decide(&d, &json!(9999), "approve", "x").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/approvals/9999").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/approvals?status=bogus").await, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(
        d.get_ok(&format!("/api/v1/approvals/{}", approval["id"])).await["status"],
        "pending",
        "nothing changed"
    );
    expect_json(decide(&d, &approval["id"], "deny", "first").await, StatusCode::OK).await;
    let again =
        expect_problem(decide(&d, &approval["id"], "approve", "second").await, StatusCode::CONFLICT, "already_decided")
            .await;
    assert_eq!(again["approval"]["decided_by"], "owner via first");
    let pending = d.get_ok("/api/v1/approvals?status=pending").await;
    assert_eq!(pending["items"], json!([]));
    let all = d.get_ok("/api/v1/approvals").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn cancelling_an_execution_cancels_its_approvals() {
    let d = spawn_for_executions().await;
    gated_profile(&d).await;
    let gated = d.exec_with(json!({"prompt": "true", "profile": "careful", "cwd": "/tmp"})).await;
    let cancelled =
        expect_json(d.post(&format!("/api/v1/executions/{}/cancel", gated["id"]), &json!({})).await, StatusCode::OK)
            .await;
    assert_eq!(cancelled["status"], "cancelled");
    let approval = wait_until("the approval to be cancelled", Duration::from_secs(10), || async {
        let a = d.get_ok(&format!("/api/v1/approvals/{}", gated["approval_id"])).await;
        (a["status"] == "cancelled").then_some(a)
    })
    .await;
    assert_eq!(approval["decided_by"], "warden");

    // An approval a running agent waits on is shown on its execution, and cancelled with it.
    let running = d.exec("sleep 30").await;
    d.wait_status(&running["id"], "running").await;
    let asked =
        request(&d, json!({"title": "tool call", "execution_id": running["id"], "source": "claude-code"})).await;
    let waiting = wait_until("waiting_approval_id", Duration::from_secs(10), || async {
        let e = d.execution(&running["id"]).await;
        (e["waiting_approval_id"] == asked["id"]).then_some(e)
    })
    .await;
    assert_eq!(waiting["status"], "running");
    d.post(&format!("/api/v1/executions/{}/cancel", running["id"]), &json!({})).await;
    d.wait_final(&running["id"]).await;
    wait_until("the agent's approval to be cancelled", Duration::from_secs(10), || async {
        (d.get_ok(&format!("/api/v1/approvals/{}", asked["id"])).await["status"] == "cancelled").then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_congested_client_still_gets_approval_requests() {
    let d = spawn_for_executions().await;
    let (mut slow, _) = d.ws().await;
    slow.send_json(json!({"type": "subscribe", "topics": ["*"]})).await;
    let probe = d.exec("true").await["id"].clone();
    slow.events_until(|e| e["type"] == "execution.finished" && e["execution_id"] == probe).await;
    // It stops reading while output floods; then an approval is requested.
    let flood = d.exec("seq 1 100000").await["id"].clone();
    d.wait_final(&flood).await;
    let approval = request(&d, json!({"title": "while you were away"})).await;
    let mut skipped = 0;
    loop {
        let message = slow.next_json().await.expect("not dropped");
        if message["type"] == "skipped" {
            skipped += message["count"].as_u64().unwrap();
        }
        if message["type"] == "event" && message["event"]["type"] == "approval.requested" {
            assert_eq!(message["event"]["data"]["id"], approval["id"]);
            break;
        }
    }
    assert!(skipped > 0, "its output events were skipped, its approval was not");
}

fn hook_input(tool: &str, input: Value) -> String {
    json!({
        "session_id": "abc123",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": input,
        "tool_use_id": "toolu_01",
    })
    .to_string()
}

async fn run_hook(home: &std::path::Path, args: &[&str], input: String) -> tokio::process::Child {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(warden_bin())
        .args(["hook", "claude"])
        .args(args)
        .env("WARDEN_HOME", home)
        .env("WARDEN_EXECUTION_ID", "")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child
}

async fn pending_approval(d: &TestDaemon) -> Value {
    wait_until("the hook's approval", Duration::from_secs(10), || async {
        d.get_ok("/api/v1/approvals?status=pending").await["items"].as_array().unwrap().first().cloned()
    })
    .await
}

#[actix_web::test]
async fn the_claude_hook_asks_warden_and_relays_the_answer() {
    let d = spawn_for_executions().await;
    let home = d.home.dir();

    let hook = run_hook(home, &["--tools", "Bash,Write"], hook_input("Bash", json!({"command": "rm -rf build"}))).await;
    let approval = pending_approval(&d).await;
    assert_eq!(approval["title"], "Bash: rm -rf build");
    assert_eq!(approval["source"], "claude-code");
    assert_eq!(approval["details"]["tool_input"], json!({"command": "rm -rf build"}));
    assert_eq!(approval["details"]["tool_use_id"], "toolu_01");
    expect_json(decide(&d, &approval["id"], "approve", "alice").await, StatusCode::OK).await;
    let output = hook.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(0));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        answer,
        json!({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
               "permissionDecisionReason": "approved in warden by owner via alice: alice says approve"}})
    );

    let hook = run_hook(
        home,
        &["--tools", "Bash,Write"],
        hook_input("Write", json!({"file_path": "/etc/passwd", "content": "x"})),
    )
    .await;
    let approval = pending_approval(&d).await;
    assert_eq!(approval["title"], "Write: /etc/passwd");
    expect_json(decide(&d, &approval["id"], "deny", "bob").await, StatusCode::OK).await;
    let answer: Value = serde_json::from_slice(&hook.wait_with_output().await.unwrap().stdout).unwrap();
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny");
    assert_eq!(
        answer["hookSpecificOutput"]["permissionDecisionReason"],
        "denied in warden by owner via bob: bob says deny"
    );

    // A tool that is not guarded passes straight through: no output, no approval.
    let passed = run_hook(home, &["--tools", "Bash,Write"], hook_input("Read", json!({"file_path": "/tmp/x"}))).await;
    let output = passed.wait_with_output().await.unwrap();
    assert_eq!((output.status.code(), output.stdout.len()), (Some(0), 0));
    assert_eq!(d.get_ok("/api/v1/approvals?status=pending").await["items"], json!([]));

    // No answer within its own timeout: the approval's default (deny) applies.
    let timed = run_hook(home, &["--timeout", "1"], hook_input("Bash", json!({"command": "ls"}))).await;
    let answer: Value = serde_json::from_slice(&timed.wait_with_output().await.unwrap().stdout).unwrap();
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "deny");
    assert!(answer["hookSpecificOutput"]["permissionDecisionReason"].as_str().unwrap().contains("default"));
}

#[actix_web::test]
async fn the_claude_hook_falls_back_when_warden_is_down() {
    let nowhere = tempfile::tempdir().unwrap();
    let input = hook_input("Bash", json!({"command": "ls"}));
    for (args, expected) in [(vec![], "ask"), (vec!["--on-error", "deny"], "deny")] {
        let child = tokio::process::Command::new(warden_bin())
            .args(["hook", "claude"])
            .args(&args)
            .env("WARDEN_HOME", nowhere.path())
            .env("WARDEN_URL", "http://127.0.0.1:9")
            .env("WARDEN_TOKEN", "x")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        use tokio::io::AsyncWriteExt;
        child.stdin.take().unwrap().write_all(input.as_bytes()).await.unwrap();
        let output = child.wait_with_output().await.unwrap();
        assert_eq!(output.status.code(), Some(0));
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], expected);
        assert!(answer["hookSpecificOutput"]["permissionDecisionReason"].as_str().unwrap().contains("not reachable"));
    }
}

#[actix_web::test]
async fn approvals_are_answered_from_the_cli() {
    let d = spawn_for_executions().await;
    let home = d.home.dir();
    let one = request(&d, json!({"title": "deploy to staging"})).await;
    let two = request(&d, json!({"title": "drop the table"})).await;
    let listed = stdout(&warden(home, &["approvals"]).await);
    assert!(listed.contains("deploy to staging") && listed.contains("drop the table"), "{listed}");

    let approved = warden(home, &["approve", &one["id"].to_string(), "--reason", "looks fine"]).await;
    assert!(approved.status.success(), "{}", stderr(&approved));
    let stored = d.get_ok(&format!("/api/v1/approvals/{}", one["id"])).await;
    assert_eq!((stored["status"].as_str(), stored["reason"].as_str()), (Some("approved"), Some("looks fine")));
    assert_eq!(stored["decided_by"], "owner via cli");

    expect_json(decide(&d, &two["id"], "deny", "dashboard").await, StatusCode::OK).await;
    let lost = warden(home, &["approve", &two["id"].to_string()]).await;
    assert_eq!(lost.status.code(), Some(1));
    assert!(
        stderr(&lost).contains("lost") && stderr(&lost).contains("denied by owner via dashboard"),
        "{}",
        stderr(&lost)
    );

    let json: Value = serde_json::from_slice(&warden(home, &["approvals", "--all", "--json"]).await.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(stdout(&warden(home, &["approvals", "--json"]).await).trim(), "[]");
}

#[actix_web::test]
async fn warden_approvals_lists_every_pending_one_past_a_page() {
    let d = spawn_daemon().await;
    for n in 0..505 {
        request(&d, json!({"title": format!("question {n}")})).await;
    }
    let listed = warden(d.home.dir(), &["approvals", "--json"]).await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let items: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(items.len(), 505, "every pending approval, not the newest 500");
    let shown = stdout(&warden(d.home.dir(), &["approvals"]).await);
    assert!(shown.contains("question 0\n") && shown.contains("question 504\n"), "{}", &shown[..200.min(shown.len())]);
}

#[actix_web::test]
async fn a_stopped_claude_hook_withdraws_its_approval() {
    let d = spawn_for_executions().await;
    let home = d.home.dir();
    for signal in [nix::sys::signal::Signal::SIGTERM, nix::sys::signal::Signal::SIGINT] {
        let hook = run_hook(home, &["--tools", "Bash"], hook_input("Bash", json!({"command": "make deploy"}))).await;
        let approval = pending_approval(&d).await;
        // Claude's own hook timeout passed (or the user pressed Ctrl-C): the hook is stopped.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(hook.id().unwrap() as i32), signal).unwrap();
        let output = hook.wait_with_output().await.unwrap();
        assert!(output.stdout.is_empty(), "nobody reads an answer now: {}", String::from_utf8_lossy(&output.stdout));
        let withdrawn = d.get_ok(&format!("/api/v1/approvals/{}", approval["id"])).await;
        assert_eq!(
            (withdrawn["status"].as_str(), withdrawn["reason"].as_str()),
            (Some("cancelled"), Some("the asker stopped waiting"))
        );
        // A later answer does not seem to count.
        let late = warden(home, &["approve", &approval["id"].to_string()]).await;
        assert_eq!(late.status.code(), Some(1), "{}", stderr(&late));
        assert!(stderr(&late).contains("cancelled"), "{}", stderr(&late));
    }
    // Withdrawing a settled one is refused as a late decision is.
    let asked = request(&d, json!({"title": "x"})).await;
    expect_json(decide(&d, &asked["id"], "approve", "me").await, StatusCode::OK).await;
    expect_problem(
        d.delete(&format!("/api/v1/approvals/{}", asked["id"])).await,
        StatusCode::CONFLICT,
        "already_decided",
    )
    .await;
}
