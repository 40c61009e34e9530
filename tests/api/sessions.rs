//! Sessions: multi-turn conversations with a stand-in agent, turn order, close, gating,
//! restarts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// A stand-in agent: prints how it was called and which turn this is.
fn agent_script(dir: &std::path::Path) -> std::path::PathBuf {
    let script = dir.join("agent.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         # $1 is --session-id or --resume, $2 the uuid, $3 the prompt, $4 the turn\n\
         # The prompt `wait` waits until the test creates the file $GATE.\n\
         if [ \"$3\" = wait ]; then while [ ! -e \"$GATE\" ]; do sleep 0.02; done; fi\n\
         echo \"mode=$1 uuid=$2 turn=$4\"\n\
         echo \"you said: $3\"\n",
    )
    .unwrap();
    script
}

async fn agent_profile(d: &TestDaemon, dir: &std::path::Path, approval: &str) -> String {
    let script = agent_script(dir).display().to_string();
    let name = format!("agent-{approval}");
    let gate = dir.join("gate").display().to_string();
    let profile = json!({
        "name": name, "provider": "local", "approval": approval, "env": {"GATE": gate},
        "command": ["sh", script, "--session-id", "{session_uuid}", "{prompt}", "{turn}"],
        "continue_command": ["sh", script, "--resume", "{session_uuid}", "{prompt}", "{turn}"],
    });
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    name
}

async fn transcript(d: &TestDaemon, id: &Value) -> Vec<Value> {
    d.get_ok(&format!("/api/v1/sessions/{id}/messages?limit=500")).await["items"].as_array().unwrap().clone()
}

/// Waits until the session has `n` agent replies; returns the transcript.
async fn replies(d: &TestDaemon, id: &Value, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} agent replies"), Duration::from_secs(30), || async {
        let messages = transcript(d, id).await;
        (messages.iter().filter(|m| m["role"] == "agent").count() >= n).then_some(messages)
    })
    .await
}

#[actix_web::test]
async fn a_three_turn_conversation_resumes_the_same_agent_session() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let profile = agent_profile(&d, dir.path(), "never").await;
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": profile, "cwd": dir.path(), "title": "chat"})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!((session["status"].as_str(), session["turns"].as_u64()), (Some("idle"), Some(0)));
    let uuid = session["session_uuid"].as_str().unwrap().to_owned();
    assert_eq!(uuid.len(), 36);
    let id = session["id"].clone();

    for (turn, text) in ["hello", "and then?", "thanks"].iter().enumerate() {
        let sent = expect_json(
            d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": text})).await,
            StatusCode::ACCEPTED,
        )
        .await;
        assert_eq!(sent["message"]["role"], "user");
        assert_eq!(sent["execution"]["session_id"], id);
        replies(&d, &id, turn + 1).await;
    }
    let messages = transcript(&d, &id).await;
    let roles: Vec<&str> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "agent", "user", "agent", "user", "agent"]);
    assert_eq!(messages[1]["content"], format!("mode=--session-id uuid={uuid} turn=1\nyou said: hello"));
    assert_eq!(messages[3]["content"], format!("mode=--resume uuid={uuid} turn=2\nyou said: and then?"));
    assert_eq!(messages[5]["content"], format!("mode=--resume uuid={uuid} turn=3\nyou said: thanks"));
    let session = d.get_ok(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!((session["turns"].as_u64(), session["status"].as_str()), (Some(3), Some("idle")));
    assert_eq!(session["last_execution_id"], messages[5]["execution_id"]);

    let events = d.get_ok(&format!("/api/v1/events/history?topics=session.*&session_id={id}")).await;
    let kinds: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "session.message").count(), 6);
    assert_eq!(kinds[0], "session.created");
}

#[actix_web::test]
async fn messages_sent_during_a_turn_wait_and_keep_their_order() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let profile = agent_profile(&d, dir.path(), "never").await;
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": profile, "cwd": dir.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = session["id"].clone();
    let mut executions = Vec::new();
    for text in ["wait", "two", "three", "four"] {
        let sent = expect_json(
            d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": text})).await,
            StatusCode::ACCEPTED,
        )
        .await;
        executions.push(sent["execution"].clone());
    }
    assert!(executions[0].is_object(), "the first turn starts at once");
    assert!(executions[1..].iter().all(Value::is_null), "the others wait behind it");
    std::fs::write(dir.path().join("gate"), "").unwrap();
    let messages = replies(&d, &id, 4).await;
    let agent: Vec<String> =
        messages.iter().filter(|m| m["role"] == "agent").map(|m| m["content"].as_str().unwrap().to_owned()).collect();
    for (i, text) in ["wait", "two", "three", "four"].iter().enumerate() {
        assert!(agent[i].ends_with(&format!("turn={}\nyou said: {text}", i + 1)), "{agent:?}");
    }
    // One at a time: each turn started after the previous one finished.
    let mut last_finished = String::new();
    for message in messages.iter().filter(|m| m["role"] == "agent") {
        let execution = d.execution(&message["execution_id"]).await;
        assert!(execution["started_at"].as_str().unwrap() >= last_finished.as_str());
        last_finished = execution["finished_at"].as_str().unwrap().to_owned();
    }
}

#[actix_web::test]
async fn closing_a_session_cancels_its_running_turn() {
    let d = spawn_with(|c| c.kill_grace = Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let profile = agent_profile(&d, dir.path(), "never").await;
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": profile, "cwd": dir.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = session["id"].clone();
    // The first turn waits on a gate that never opens; a second message waits behind it.
    let sent = expect_json(
        d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "wait"})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let execution = sent["execution"]["id"].clone();
    d.wait_status(&execution, "running").await;
    d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "never runs"})).await;
    let closed = expect_json(d.delete(&format!("/api/v1/sessions/{id}")).await, StatusCode::OK).await;
    assert_eq!(closed["status"], "closed");
    assert_eq!(d.wait_final(&execution).await["status"], "cancelled");
    // The cancelled turn gets its reply; the waiting message never ran; history is kept.
    let messages = replies(&d, &id, 1).await;
    assert!(messages.iter().any(|m| m["content"].as_str().unwrap().contains("cancelled")), "{messages:?}");
    let waiting = messages.iter().find(|m| m["content"] == "never runs").unwrap();
    assert_eq!(waiting["execution_id"], Value::Null);
    assert_eq!(d.get_ok(&format!("/api/v1/sessions/{id}")).await["status"], "closed");
    expect_problem(
        d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "more"})).await,
        StatusCode::CONFLICT,
        "session_closed",
    )
    .await;
    expect_problem(
        d.post("/api/v1/sessions/999/messages", &json!({"content": "x"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[actix_web::test]
async fn a_session_turn_with_a_gated_profile_waits_for_approval() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let profile = agent_profile(&d, dir.path(), "always").await;
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": profile, "cwd": dir.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = session["id"].clone();
    let sent = expect_json(
        d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "risky"})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(sent["execution"]["status"], "pending_approval");
    let approval = d.get_ok(&format!("/api/v1/approvals/{}", sent["execution"]["approval_id"])).await;
    assert_eq!(approval["session_id"], id);
    d.post(&format!("/api/v1/approvals/{}", approval["id"]), &json!({"decision": "deny", "reason": "not now"})).await;
    let messages = replies(&d, &id, 1).await;
    assert!(messages[1]["content"].as_str().unwrap().contains("denied"), "{}", messages[1]);
    // The session goes on: the next turn asks again.
    let next = expect_json(
        d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "please"})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let next_approval = wait_until("the next approval", Duration::from_secs(10), || async {
        let page = d.get_ok("/api/v1/approvals?status=pending").await;
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    let _ = next;
    d.post(&format!("/api/v1/approvals/{}", next_approval["id"]), &json!({"decision": "approve"})).await;
    let messages = replies(&d, &id, 2).await;
    assert!(messages[3]["content"].as_str().unwrap().ends_with("you said: please"), "{}", messages[3]);
}

#[actix_web::test]
async fn the_transcript_survives_a_restart() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let profile = agent_profile(&d, dir.path(), "never").await;
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": profile, "cwd": dir.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = session["id"].clone();
    d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "remember me"})).await;
    let before = replies(&d, &id, 1).await;
    let d = d.restart().await;
    assert_eq!(transcript(&d, &id).await, before);
    // And the conversation goes on, resuming the same agent session.
    d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "still there?"})).await;
    let after = replies(&d, &id, 2).await;
    assert!(after[3]["content"].as_str().unwrap().starts_with("mode=--resume"), "{}", after[3]);
    // The reply is stored first, then the session goes idle (its next message may start).
    wait_until("the session to be idle", Duration::from_secs(30), || async {
        let listed = d.get_ok("/api/v1/sessions?status=idle").await;
        (listed["items"][0]["id"] == id).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn bad_session_requests_are_problems() {
    let d = spawn_for_executions().await;
    expect_problem(
        d.post("/api/v1/sessions", &json!({"profile": "nope", "cwd": "/tmp"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_problem(d.post("/api/v1/sessions", &json!({})).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        .await;
    expect_problem(
        d.post("/api/v1/sessions", &json!({"cwd": "/tmp", "workspace": "w"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let session = expect_json(d.post("/api/v1/sessions", &json!({"cwd": "/tmp"})).await, StatusCode::CREATED).await;
    let id = session["id"].clone();
    expect_problem(
        d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": "  "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let renamed = d
        .client
        .patch(d.url(&format!("/api/v1/sessions/{id}")))
        .bearer_auth(&d.token)
        .json(&json!({"title": "new name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(renamed, StatusCode::OK).await["title"], "new name");
    expect_problem(d.get("/api/v1/sessions/999").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/sessions/999/messages").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/sessions?status=bogus").await, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[actix_web::test]
async fn session_commands_and_chat_in_a_terminal() {
    let d = spawn_for_executions().await;
    let home = d.home.dir();
    let dir = tempfile::tempdir().unwrap();
    let profile = agent_profile(&d, dir.path(), "never").await;
    let cwd = dir.path().to_str().unwrap();

    let new = warden(home, &["session", "new", "--profile", &profile, "--cwd", cwd, "--title", "cli"]).await;
    assert!(new.status.success(), "{}", stderr(&new));
    let id = stdout(&new).trim().to_owned();
    let sent = warden(home, &["session", "send", &id, "--follow", "hi", "there"]).await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert!(
        stdout(&sent).contains("mode=--session-id") && stdout(&sent).contains("you said: hi there"),
        "{}",
        stdout(&sent)
    );
    let shown = stdout(&warden(home, &["session", "show", &id]).await);
    assert!(shown.contains("you>\nhi there") && shown.contains("agent>\nmode=--session-id"), "{shown}");
    assert!(stdout(&warden(home, &["session", "ls"]).await).contains("cli"));

    // `warden chat` in a real pseudo-terminal: type, read the reply, Ctrl-D.
    let driver = r#"
import os, pty, sys, select, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
out = b""
def until(text, timeout=30):
    global out
    end = time.time() + timeout
    while text.encode() not in out:
        if time.time() > end:
            sys.stdout.write(out.decode(errors="replace")); sys.exit(3)
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try: out += os.read(fd, 65536)
            except OSError: break
until("you> ")
os.write(fd, b"first question\n")
until("you said: first question")
until("you> ")
os.write(fd, b"second\n")
until("you said: second")
until("you> ")
os.write(fd, b"\x04")
until("kept")
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
"#;
    let chat = tokio::process::Command::new("python3")
        .args(["-c", driver, warden_bin().to_str().unwrap(), "chat", "--profile", &profile, "--cwd", cwd])
        .env("WARDEN_HOME", home)
        .output()
        .await
        .unwrap();
    let screen = stdout(&chat);
    assert_eq!(chat.status.code(), Some(0), "{screen}\n{}", stderr(&chat));
    assert!(screen.contains("mode=--session-id") && screen.contains("mode=--resume"), "{screen}");
    assert!(screen.contains("turn=2"), "{screen}");
    let sessions = d.get_ok("/api/v1/sessions").await;
    assert_eq!(sessions["items"].as_array().unwrap().len(), 2);

    let closed = warden(home, &["session", "close", &id]).await;
    assert!(stdout(&closed).contains("closed"));
}

#[actix_web::test]
async fn an_approval_asked_during_a_turn_belongs_to_its_session() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": "shell", "cwd": dir.path(), "title": "hooked"})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = session["id"].clone();
    // The turn's agent asks through the Claude hook, with its own token, naming no session.
    let input = r#"{"tool_name":"Bash","tool_input":{"command":"make deploy"}}"#;
    let turn = format!(
        "echo $WARDEN_SESSION_ID; echo '{input}' | {} hook claude --tools Bash --timeout 30",
        warden_bin().display()
    );
    expect_json(
        d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": turn})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    let asked = wait_until("the turn's approval", Duration::from_secs(20), || async {
        d.get_ok("/api/v1/approvals?status=pending").await["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(asked["session_id"], id, "{asked}");
    // A client following the conversation sees it asked.
    let followed = d.get_ok(&format!("/api/v1/events/history?session_id={id}&topics=approval.*")).await;
    assert!(followed["items"].as_array().unwrap().iter().any(|e| e["type"] == "approval.requested"), "{followed}");
    expect_json(
        d.post(&format!("/api/v1/approvals/{}", asked["id"]), &json!({"decision": "approve"})).await,
        StatusCode::OK,
    )
    .await;
    let messages = replies(&d, &id, 1).await;
    let reply = messages.iter().find(|m| m["role"] == "agent").unwrap()["content"].as_str().unwrap().to_owned();
    assert!(reply.starts_with(&format!("{id}\n")), "the agent knew its session: {reply}");
}
