//! Supervising processes: cancel, pause/resume, timeouts, graceful stop and recovery
//! after the daemon is killed. Real process trees throughout.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn cancel_takes_the_whole_process_tree_even_what_ignores_sigterm() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The leader ignores SIGTERM and so does its grandchild.
    let script = format!(
        "trap '' TERM; sh -c 'trap \"\" TERM; sleep 300 & echo $! > {pids}.grandchild; wait' & echo $$ > {pids}.leader; wait",
        pids = pids.display()
    );
    let id = d.exec(&script).await["id"].clone();
    d.wait_status(&id, "running").await;
    let leader = read_pid_file(&dir.path().join("pids.leader")).await;
    let grandchild = read_pid_file(&dir.path().join("pids.grandchild")).await;
    assert!(alive(leader) && alive(grandchild));

    let answer =
        expect_json(d.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(answer["id"], id);
    let done = d.wait_final(&id).await;
    assert_eq!(done["status"], "cancelled");
    assert!(!alive(leader), "leader {leader} is gone");
    assert!(!alive(grandchild), "grandchild {grandchild} is gone");
}

#[actix_web::test]
async fn a_paused_execution_makes_no_progress_until_resumed() {
    let d = spawn_for_executions().await;
    let id = d.exec("i=0; while true; do i=$((i+1)); echo $i; sleep 0.02; done").await["id"].clone();
    wait_until("some output", Duration::from_secs(10), || async { (d.output(&id).await.len() >= 3).then_some(()) })
        .await;

    let paused = expect_json(d.post(&format!("/api/v1/executions/{id}/pause"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(paused["status"], "paused");
    // Lines already read may still be on their way to the store; then nothing more comes.
    let settled = wait_until("output to settle", Duration::from_secs(5), || async {
        let before = d.output(&id).await.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
        (d.output(&id).await.len() == before).then_some(before)
    })
    .await;
    // A running loop prints every 20 ms: a 300 ms window with no new line shows it is stopped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.output(&id).await.len(), settled, "a stopped process printed nothing");
    let providers = d.get_ok("/api/v1/providers/local").await;
    assert_eq!(providers["running"], 1, "a paused execution keeps its slot");
    expect_problem(
        d.post(&format!("/api/v1/executions/{id}/pause"), &json!({})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;

    let resumed =
        expect_json(d.post(&format!("/api/v1/executions/{id}/resume"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(resumed["status"], "running");
    wait_until("progress after resume", Duration::from_secs(10), || async {
        (d.output(&id).await.len() > settled + 2).then_some(())
    })
    .await;
    expect_problem(
        d.post(&format!("/api/v1/executions/{id}/resume"), &json!({})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    d.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).await;
    assert_eq!(d.wait_final(&id).await["status"], "cancelled");
}

#[actix_web::test]
async fn a_timeout_kills_the_process_group() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let id = d.exec_with(json!({"prompt": script, "cwd": "/tmp", "timeout_s": 1})).await["id"].clone();
    let child = read_pid_file(&pidfile).await;
    let done = d.wait_final(&id).await;
    assert_eq!(done["status"], "timed_out");
    assert!(done["error"].as_str().unwrap().contains("timed out after 1s"), "{done}");
    assert!(!alive(child), "the child {child} is gone");
}

#[actix_web::test]
async fn a_paused_execution_s_timeout_clock_stops() {
    let d = spawn_for_executions().await;
    let id = d.exec_with(json!({"prompt": "sleep 300", "cwd": "/tmp", "timeout_s": 1})).await["id"].clone();
    d.wait_status(&id, "running").await;
    d.post(&format!("/api/v1/executions/{id}/pause"), &json!({})).await;
    // Paused for longer than the whole timeout: it must not time out meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.execution(&id).await["status"], "paused");
    d.post(&format!("/api/v1/executions/{id}/resume"), &json!({})).await;
    assert_eq!(d.wait_final(&id).await["status"], "timed_out");
}

#[actix_web::test]
async fn a_graceful_stop_interrupts_running_work_and_keeps_the_queue() {
    let d = spawn_with(|c| {
        c.kill_grace = Duration::from_millis(300);
        c.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    d.set_limits("local", 1, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("leader");
    let running = d.exec(&format!("trap '' TERM; echo $$ > {}; sleep 300", pidfile.display())).await["id"].clone();
    let queued = d.exec("echo queued ran").await["id"].clone();
    d.wait_status(&running, "running").await;
    let leader = read_pid_file(&pidfile).await;

    let d = d.restart().await;
    assert!(!alive(leader), "SIGKILL after the shutdown grace took the process that ignored SIGTERM");
    let interrupted = d.execution(&running).await;
    assert_eq!(interrupted["status"], "interrupted");
    assert_eq!(interrupted["error"], "the daemon stopped while it ran");
    assert_eq!(d.wait_final(&queued).await["status"], "succeeded", "the queue started again after the restart");
    assert_eq!(d.output_text(&queued).await, "queued ran");
}

#[actix_web::test]
async fn new_work_is_refused_while_shutting_down() {
    let d = spawn_with(|c| c.shutdown_grace = Duration::from_secs(5)).await;
    let id = d.exec("trap 'sleep 1; exit 0' TERM; sleep 300 & wait").await["id"].clone();
    d.wait_status(&id, "running").await;
    let handle_client = d.client.clone();
    let (url, token) = (d.url("/api/v1/executions"), d.token.clone());
    let stopping = actix_web::rt::spawn(async move { d.stop().await });
    let refused = wait_until("the refusal", Duration::from_secs(10), || async {
        let response = handle_client
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({"prompt": "true", "cwd": "/tmp"}))
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    expect_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "shutting_down").await;
    let d = stopping.await.unwrap().start().await;
    let ended = d.execution(&id).await;
    assert_eq!(ended["status"], "succeeded", "it finished on its own during the grace period: {ended}");
}

#[test]
fn after_kill_9_running_work_is_interrupted_and_the_queue_resumes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // Agents cannot create files beside the data dir (the sandbox), only in a directory there.
    let pidfile = dir.path().join("work/leader");
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    let config = "[providers.local]\nmax_concurrent = 1\n";
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), config).unwrap();
    let mut daemon = std::process::Command::new(warden_bin())
        .args(["serve", "--port", "0"])
        .env("WARDEN_HOME", &home)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let rt = actix_web::rt::System::new();
    let (running, queued, leader) = rt.block_on(async {
        let info = wait_until("server.json", Duration::from_secs(20), || async {
            warden::home::Home::new(home.clone()).read_server_info().ok()
        })
        .await;
        let token = std::fs::read_to_string(home.join("token")).unwrap().trim().to_owned();
        let client = warden::client::Client::new(&info.url, &token);
        let running: serde_json::Value = client
            .post(
                "/api/v1/executions",
                &json!({"prompt": format!("echo $$ > {}; echo started; sleep 300", pidfile.display()), "cwd": "/tmp"}),
            )
            .await
            .unwrap();
        let mut queued = Vec::new();
        for i in 0..3 {
            let e: serde_json::Value = client
                .post("/api/v1/executions", &json!({"prompt": format!("echo {i}"), "cwd": "/tmp"}))
                .await
                .unwrap();
            queued.push(e["id"].clone());
        }
        let leader = read_pid_file(&pidfile).await;
        // Its first line is stored before the crash.
        wait_until("the first line", Duration::from_secs(10), || async {
            let page: serde_json::Value =
                client.get(&format!("/api/v1/executions/{}/output", running["id"])).await.ok()?;
            (!page["items"].as_array()?.is_empty()).then_some(())
        })
        .await;
        (running["id"].clone(), queued, leader)
    });
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    assert!(alive(leader), "the execution outlived the daemon (own process group)");

    rt.block_on(async {
        let d = spawn_in(warden::home::Home::new(home.clone()), |_| {}).await;
        let interrupted = d.execution(&running).await;
        assert_eq!(interrupted["status"], "interrupted");
        assert_eq!(interrupted["error"], "the daemon stopped while it ran");
        assert!(interrupted["finished_at"].is_string());
        assert_eq!(d.output_text(&running).await, "started", "acknowledged output survived");
        assert!(!alive(leader), "recovery killed the leftover process group");

        let mut finished = Vec::new();
        for id in &queued {
            finished.push(d.wait_final(id).await);
        }
        let mut starts: Vec<(String, i64)> = finished
            .iter()
            .map(|e| (e["started_at"].as_str().unwrap().to_owned(), e["id"].as_i64().unwrap()))
            .collect();
        starts.sort();
        let order: Vec<i64> = starts.iter().map(|(_, id)| *id).collect();
        assert_eq!(order, queued.iter().map(|q| q.as_i64().unwrap()).collect::<Vec<_>>(), "original order");
        for (i, id) in queued.iter().enumerate() {
            assert_eq!(d.output_text(id).await, i.to_string());
        }
        d.stop().await;
    });
}

#[actix_web::test]
async fn an_execution_interrupted_by_a_crash_ends_for_its_followers() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let d = ServeProcess::start(&home).await;
    let running = d.exec_with(json!({"prompt": "echo up; sleep 300", "cwd": work})).await;
    let id = running["id"].clone();
    let asked = json!({"title": "keep going?", "execution_id": id});
    let approval = expect_json(d.post("/api/v1/approvals", &asked).await, StatusCode::CREATED).await;
    // A follower sees the execution start, and remembers where it was.
    let stream = d.get(&format!("/api/v1/executions/{id}/stream")).await;
    let seen = read_sse(stream, |event, data| event == "execution.output" && data.contains("up")).await;
    let last = seen.iter().filter_map(|(seq, _, _)| *seq).max().expect("events with ids");

    d.kill_9().await;
    let d = ServeProcess::start(&home).await;

    // Reconnecting after the crash, it learns the end, and the stream ends.
    let resumed = d
        .request(reqwest::Method::GET, &format!("/api/v1/executions/{id}/stream"))
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    // Before, it got keep-alives forever.
    let after = tokio::time::timeout(Duration::from_secs(20), read_sse(resumed, |event, _| event == "end"))
        .await
        .expect("the stream ends after the crash");
    let finished = after.iter().find(|(_, event, _)| event == "execution.finished").expect("execution.finished");
    let finished: serde_json::Value = serde_json::from_str(&finished.2).unwrap();
    assert_eq!(finished["data"]["status"], "interrupted", "{finished}");
    assert_eq!(after.last().unwrap().1, "end");
    // Its approval's followers learn it was cancelled, and why.
    let history = d.get_ok("/api/v1/events/history?topics=approval.*").await;
    let cancelled = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "approval.cancelled" && e["approval_id"] == approval["id"])
        .cloned()
        .expect("approval.cancelled after the crash");
    assert_eq!(cancelled["data"]["reason"], "the execution was interrupted");
    // And the list shows it as the events do.
    let listed = d.get_ok("/api/v1/executions?status=interrupted").await;
    assert_eq!(listed["items"][0]["id"], id);
}
