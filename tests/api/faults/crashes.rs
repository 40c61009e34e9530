//! kill -9 at random moments under load, twenty times: nothing acknowledged is lost.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// What the daemons acknowledged with a 2xx, over all the rounds.
#[derive(Default, Clone)]
struct Acknowledged {
    workspaces: Vec<String>,
    executions: Vec<i64>,
    approvals: Vec<i64>,
    /// Approval id → the status its acknowledged decision gave it.
    decisions: BTreeMap<i64, &'static str>,
}

/// Executions with output (each records its pid and a background child's pid in
/// `pids/<execution id>`), workspaces, approvals being decided, and an SSE and a
/// WebSocket client streaming every event, until the daemon stops answering.
async fn mixed_load(d: &Api, round: usize, dir: &Path, acked: &RefCell<Acknowledged>) {
    let pids = dir.join("pids");
    let creating = async {
        for i in 0.. {
            let script = format!(
                "echo $$ >> {pids}/$WARDEN_EXECUTION_ID; sleep 30 & echo $! >> {pids}/$WARDEN_EXECUTION_ID; \
                 seq 1 {lines}; sleep 0.{pause}",
                pids = pids.display(),
                lines = 50 + i % 7 * 50,
                pause = i % 4,
            );
            let body = json!({ "prompt": script, "cwd": dir });
            let Some(created) = acknowledged(d.request(Method::POST, "/api/v1/executions").json(&body)).await else {
                return;
            };
            acked.borrow_mut().executions.push(created["id"].as_i64().unwrap());
            if i % 3 == 0 {
                let name = format!("w-{round}-{i}");
                let body = json!({ "name": name, "path": dir });
                if acknowledged(d.request(Method::POST, "/api/v1/workspaces").json(&body)).await.is_none() {
                    return;
                }
                acked.borrow_mut().workspaces.push(name);
            }
        }
    };
    let deciding = async {
        for i in 0.. {
            let body = json!({ "title": format!("round {round}, question {i}") });
            let Some(approval) = acknowledged(d.request(Method::POST, "/api/v1/approvals").json(&body)).await else {
                return;
            };
            let id = approval["id"].as_i64().unwrap();
            acked.borrow_mut().approvals.push(id);
            let (decision, status) = if i % 2 == 0 { ("approve", "approved") } else { ("deny", "denied") };
            let decide =
                d.request(Method::POST, &format!("/api/v1/approvals/{id}")).json(&json!({ "decision": decision }));
            if acknowledged(decide).await.is_none() {
                return;
            }
            acked.borrow_mut().decisions.insert(id, status);
        }
    };
    let streaming = async {
        let Ok(status) = d.request(Method::GET, "/api/v1/status").send().await else { return };
        let Ok(since) = status.json::<Value>().await.map(|s| s["last_seq"].as_u64().unwrap_or(0)) else { return };
        let Ok(sse) = d.request(Method::GET, &format!("/api/v1/events?since={since}")).send().await else { return };
        let sse = async move {
            let mut sse = sse;
            let (mut last, mut buffer) = (since, String::new());
            while let Ok(Some(chunk)) = sse.chunk().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    if let Some(seq) = block.lines().find_map(|l| l.strip_prefix("id: ")) {
                        let seq: u64 = seq.parse().unwrap();
                        assert!(seq > last, "SSE: seq {seq} after {last}");
                        last = seq;
                    }
                }
            }
        };
        let ws = async {
            let Ok(mut ws) = d.try_ws().await else { return };
            ws.send_json(json!({ "type": "subscribe", "topics": ["*"], "since": since })).await;
            let mut last = since;
            while let Some(message) = ws.next_json().await {
                if message["type"] == "event" {
                    let seq = message["event"]["seq"].as_u64().unwrap();
                    assert!(seq > last, "WebSocket: seq {seq} after {last}");
                    last = seq;
                }
            }
        };
        futures_util::join!(sse, ws);
    };
    let _ = futures_util::join!(creating, deciding, streaming);
}

/// The answer to a write, once it is wholly received; `None` once the daemon is gone.
/// A refusal under this load is a failure of the test.
async fn acknowledged(request: reqwest::RequestBuilder) -> Option<Value> {
    let response = request.send().await.ok()?;
    let status = response.status();
    let text = response.text().await.ok()?;
    assert!(status.is_success(), "refused under load: {status} {text}");
    Some(serde_json::from_str(&text).expect("a JSON answer"))
}

/// The pids an execution recorded.
fn recorded_pids(dir: &Path, execution: i64) -> Vec<i64> {
    let text = std::fs::read_to_string(dir.join("pids").join(execution.to_string())).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Every item of a paged list.
async fn all_items(d: &Api, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = match &cursor {
            Some(c) => d.get_ok(&format!("{path}?limit=500&cursor={c}")).await,
            None => d.get_ok(&format!("{path}?limit=500")).await,
        };
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

/// After a restart: the database is sound, seqs are unique, everything acknowledged is
/// there, every execution's state is consistent, and nothing of an ended execution runs.
async fn check_nothing_lost(d: &ServeProcess, dir: &Path, acked: &Acknowledged) {
    let db = rusqlite::Connection::open_with_flags(
        d.home.join("warden.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    // Every output line's seq (first_seq + i for each line of a chunk) and every event's.
    let (all, distinct): (i64, i64) = db
        .query_row(
            "WITH RECURSIVE line(seq, last) AS (
                 SELECT first_seq, first_seq + lines - 1 FROM output_chunks
                 UNION ALL SELECT seq + 1, last FROM line WHERE seq < last)
             SELECT count(*), count(DISTINCT seq) FROM (SELECT seq FROM events UNION ALL SELECT seq FROM line)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(all, distinct, "an event seq was used twice");
    let gaps: i64 = db
        .query_row(
            "SELECT count(*) FROM (SELECT execution_id FROM output_chunks GROUP BY execution_id
                 HAVING sum(lines) != max(first_n + lines - 1))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gaps, 0, "an execution's output has a hole in its line numbers");

    let workspaces: Vec<String> =
        all_items(d, "/api/v1/workspaces").await.iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect();
    for name in &acked.workspaces {
        assert!(workspaces.contains(name), "acknowledged workspace {name} is gone");
    }
    let approvals: BTreeMap<i64, Value> =
        all_items(d, "/api/v1/approvals").await.into_iter().map(|a| (a["id"].as_i64().unwrap(), a)).collect();
    for id in &acked.approvals {
        assert!(approvals.contains_key(id), "acknowledged approval {id} is gone");
    }
    for (id, status) in &acked.decisions {
        assert_eq!(approvals[id]["status"], *status, "acknowledged decision of approval {id}");
    }
    let executions: BTreeMap<i64, Value> =
        all_items(d, "/api/v1/executions").await.into_iter().map(|e| (e["id"].as_i64().unwrap(), e)).collect();
    for id in &acked.executions {
        assert!(executions.contains_key(id), "acknowledged execution {id} is gone");
    }
    for (id, e) in &executions {
        let status = e["status"].as_str().unwrap();
        let (started, finished) = (e["started_at"].is_string(), e["finished_at"].is_string());
        match status {
            "queued" => assert!(!started && !finished, "{e}"),
            "running" | "paused" => assert!(started && !finished, "{e}"),
            "interrupted" => {
                assert!(started && finished, "{e}");
                assert_eq!(e["error"], "the daemon stopped while it ran");
            }
            "succeeded" | "failed" => assert!(started && finished, "{e}"),
            "cancelled" => assert!(finished, "{e}"),
            other => panic!("execution {id} is {other}: {e}"),
        }
        if !matches!(status, "queued" | "running" | "paused") {
            for pid in recorded_pids(dir, *id) {
                wait_until(
                    &format!("process {pid} of execution {id} ({status}) to end"),
                    Duration::from_secs(10),
                    || std::future::ready((!alive(pid)).then_some(())),
                )
                .await;
            }
        }
    }
}

#[actix_web::test]
async fn kill_9_at_random_moments_under_load_loses_nothing_acknowledged() {
    use rand::Rng;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(dir.path().join("pids")).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), "[providers.local]\nmax_concurrent = 3\n").unwrap();
    let acked = RefCell::new(Acknowledged::default());
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let d = ServeProcess::start(&home).await;
        let so_far = acked.borrow().clone();
        check_nothing_lost(&d, dir.path(), &so_far).await;
        // SIGKILL at a random moment, from another thread, while the load runs.
        let (pid, delay) = (d.pid, Duration::from_millis(rand::rng().random_range(20..800)));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        });
        tokio::time::timeout(Duration::from_secs(60), mixed_load(&d, round, dir.path(), &acked))
            .await
            .expect("the load stops when the daemon is gone");
        killer.join().unwrap();
        d.kill_9().await;
    }

    // The last start: everything acknowledged over the twenty crashes is there, every
    // execution ends, and nothing of theirs is left running.
    let d = ServeProcess::start(&home).await;
    let acked = acked.into_inner();
    for id in &acked.executions {
        d.wait_final(&json!(id)).await;
    }
    check_nothing_lost(&d, dir.path(), &acked).await;
    let executions = all_items(&d, "/api/v1/executions").await;
    let interrupted = executions.iter().filter(|e| e["status"] == "interrupted").count();
    assert!(interrupted > 0, "the crashes interrupted nothing: the test did not test");
    assert!(acked.decisions.len() >= ROUNDS && acked.workspaces.len() >= ROUNDS, "too little load to tell");
    let mut leftovers = Vec::new();
    for e in &executions {
        leftovers.extend(recorded_pids(dir.path(), e["id"].as_i64().unwrap()).into_iter().filter(|p| alive(*p)));
    }
    assert!(leftovers.is_empty(), "processes left running: {leftovers:?}");
    eprintln!(
        "{ROUNDS} kill -9 rounds: {} executions ({interrupted} interrupted), {} approvals, {} decisions, {} workspaces acknowledged, none lost",
        acked.executions.len(),
        acked.approvals.len(),
        acked.decisions.len(),
        acked.workspaces.len()
    );
    assert!(d.stop().await.success());
}
