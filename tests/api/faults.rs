//! Faults survived, each against the real `warden serve` in a process of its own: a disk
//! that fills, a database another program locks or that is damaged, agents that flood,
//! fork or close their output, clients that churn, and kill -9 at random moments.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// Sets the daemon's file size limit (`RLIMIT_FSIZE`, soft) with util-linux's `prlimit`.
async fn limit_file_size(pid: i32, limit: &str) {
    let output = tokio::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={limit}:unlimited"))
        .output()
        .await
        .expect("prlimit runs (util-linux)");
    assert!(output.status.success(), "prlimit: {}", stderr(&output));
}

async fn workspace_names(api: &Api) -> Vec<String> {
    let page = api.get_ok("/api/v1/workspaces").await;
    page["items"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect()
}

#[actix_web::test]
async fn a_full_disk_fails_writes_clearly_keeps_serving_reads_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let d = ServeProcess::start(&home).await;
    let before = json!({ "name": "before", "path": dir.path() });
    expect_json(d.post("/api/v1/workspaces", &before).await, StatusCode::CREATED).await;
    let done = d.exec_with(json!({ "prompt": "echo written", "cwd": dir.path() })).await;
    d.wait_status(&done["id"], "succeeded").await;

    // No file of the daemon may grow by a byte: the database and its WAL cannot take
    // a commit (SQLite reports the refused write as an I/O error).
    limit_file_size(d.pid, "1").await;
    let refused = [
        d.post("/api/v1/workspaces", &json!({ "name": "during", "path": dir.path() })).await,
        d.post("/api/v1/executions", &json!({ "prompt": "echo never", "cwd": dir.path() })).await,
        d.post("/api/v1/approvals", &json!({ "title": "never asked" })).await,
        d.post("/api/v1/sessions", &json!({ "cwd": dir.path() })).await,
    ];
    for response in refused {
        let problem = expect_problem(response, StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable").await;
        assert!(problem["detail"].as_str().unwrap().contains("reads still work"), "{problem}");
    }
    // Reads are served all along, and show nothing of the refused writes.
    assert_eq!(workspace_names(&d).await, ["before"]);
    let listed = d.get_ok("/api/v1/executions").await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(d.output_text(&done["id"]).await, "written");
    assert!(d.get_ok("/api/v1/approvals").await["items"].as_array().unwrap().is_empty());
    assert_eq!(d.get_ok("/api/v1/providers/local").await["running"], 0);
    let health = d.client.get(d.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Space returns: writes work again, with no restart.
    limit_file_size(d.pid, "unlimited").await;
    let after = json!({ "name": "after", "path": dir.path() });
    expect_json(d.post("/api/v1/workspaces", &after).await, StatusCode::CREATED).await;
    let later = d.exec_with(json!({ "prompt": "echo again", "cwd": dir.path() })).await;
    d.wait_status(&later["id"], "succeeded").await;
    assert_eq!(d.output_text(&later["id"]).await, "again");

    // And what was acknowledged is what a restart finds.
    let status = d.stop().await;
    assert!(status.success(), "{status}");
    let d = ServeProcess::start(&home).await;
    assert_eq!(workspace_names(&d).await, ["before", "after"]);
    assert_eq!(d.output_text(&later["id"]).await, "again");
}

/// A signal's bit in the masks of /proc/PID/status (`SigIgn:`, `SigCgt:`), as a number.
fn signal_mask(status: &str, field: &str) -> u64 {
    let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[actix_web::test]
async fn the_daemon_catches_the_file_size_signal_and_its_agents_get_the_default() {
    const SIGXFSZ: u64 = 1 << (25 - 1);
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    let daemon = std::fs::read_to_string(format!("/proc/{}/status", d.pid)).unwrap();
    assert_ne!(signal_mask(&daemon, "SigCgt:") & SIGXFSZ, 0, "a full disk must fail writes, not kill warden");
    let run = d.exec_with(json!({ "prompt": "grep ^SigIgn: /proc/self/status", "cwd": dir.path() })).await;
    d.wait_status(&run["id"], "succeeded").await;
    let agent = d.output_text(&run["id"]).await;
    assert_eq!(signal_mask(&agent, "SigIgn:") & SIGXFSZ, 0, "an agent inherited an ignored SIGXFSZ: {agent}");
}

/// A first daemon run, so that the home holds a database with something in it.
async fn home_with_a_workspace(dir: &Path) -> std::path::PathBuf {
    let home = dir.join("home");
    let d = ServeProcess::start(&home).await;
    let body = json!({ "name": "kept", "path": dir });
    expect_json(d.post("/api/v1/workspaces", &body).await, StatusCode::CREATED).await;
    assert!(d.stop().await.success());
    home
}

#[actix_web::test]
async fn a_database_locked_by_another_program_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_a_workspace(dir.path()).await;
    let db = home.join("warden.db");

    // Another program takes the database's write lock and keeps it.
    let script = "import sqlite3, sys\n\
                  c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                  c.execute('BEGIN EXCLUSIVE')\n\
                  print('locked', flush=True)\n\
                  sys.stdin.read()\n";
    let mut holder = tokio::process::Command::new("python3")
        .args(["-c", script])
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut said = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut said).await.unwrap();
    assert_eq!(said.trim(), "locked");

    let refused = ServeProcess::run_to_end(&home).await;
    assert!(!refused.status.success(), "warden started on a locked database");
    let log = std::fs::read_to_string(home.with_extension("log")).unwrap();
    assert!(log.contains(&db.display().to_string()), "the error names the file: {log}");
    assert!(log.contains("if another program holds it, stop that program"), "and says what to do: {log}");
    assert!(!home.join("server.json").exists(), "a refused start leaves no server.json");

    // The other program lets go: warden starts, with everything it had.
    drop(holder.stdin.take());
    holder.wait().await.unwrap();
    let d = ServeProcess::start(&home).await;
    assert_eq!(workspace_names(&d).await, ["kept"]);
}

#[actix_web::test]
async fn a_damaged_database_stops_the_start_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_a_workspace(dir.path()).await;
    let db = home.join("warden.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..16].copy_from_slice(b"not a database!!");
    std::fs::write(&db, &bytes).unwrap();

    let refused = ServeProcess::run_to_end(&home).await;
    assert!(!refused.status.success(), "warden started on a damaged database");
    let log = std::fs::read_to_string(home.with_extension("log")).unwrap();
    assert!(log.contains(&db.display().to_string()), "the error names the file: {log}");
    assert!(log.contains("if it is damaged, move it aside and start again"), "and says what to do: {log}");
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the damaged file is left for the user to rescue");

    // Moved aside, a new database is made.
    std::fs::rename(&db, home.join("warden.db.damaged")).unwrap();
    let d = ServeProcess::start(&home).await;
    assert!(workspace_names(&d).await.is_empty());
    let _: Value = d.get_ok("/api/v1/status").await;
}

#[actix_web::test]
async fn an_unwritable_shared_memory_file_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let home = home_with_a_workspace(dir.path()).await;
    // Something no SQLite can map and write stands where its -shm goes.
    let shm = home.join("warden.db-shm");
    let _ = std::fs::remove_file(&shm);
    std::fs::create_dir(&shm).unwrap();

    let refused = ServeProcess::run_to_end(&home).await;
    assert_eq!(refused.status.code(), Some(1), "it stops with a message, not a signal: {:?}", refused.status);
    let log = std::fs::read_to_string(home.with_extension("log")).unwrap();
    assert!(log.contains(&shm.display().to_string()) && log.contains("remove that file"), "{log}");

    // Removed, the daemon starts on its database, all there.
    std::fs::remove_dir(&shm).unwrap();
    let d = ServeProcess::start(&home).await;
    assert_eq!(workspace_names(&d).await, ["kept"]);
}

#[actix_web::test]
async fn the_daemon_reports_a_bus_error_before_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let d = ServeProcess::start(&home).await;
    // What a truncated, memory-mapped -shm raises.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.pid), nix::sys::signal::Signal::SIGBUS).unwrap();
    let status = d.wait().await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGBUS), "it still ends by the signal: {status:?}");
    let log = std::fs::read_to_string(home.with_extension("log")).unwrap();
    assert!(log.contains("warden: SIGBUS: a memory-mapped file could not be read or written"), "{log}");
}

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

/// Processes (not yet reaped zombies aside) in a process group.
fn group_members(pgid: i64) -> Vec<i64> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
            // state, ppid, pgrp
            fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X")
        })
        .collect()
}

#[actix_web::test]
async fn an_agent_that_floods_hundreds_of_megabytes_leaves_the_daemon_small() {
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    // A dashboard follows it live meanwhile.
    let (mut follower, _) = d.ws().await;
    let idle = d.rss_mib();
    const LINE: usize = 16_000;
    const LINES: usize = 12_500; // 200 MB
    let script = format!("head -c {} /dev/zero | tr '\\0' x | fold -w {LINE}", LINE * LINES);
    let flood = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    follower.send_json(json!({ "type": "subscribe", "topics": ["execution.*"], "execution_id": flood["id"] })).await;
    let mut peak = idle;
    // The write-ahead log starts over while the writes keep coming, rather than growing
    // by all 200 MB.
    let wal = dir.path().join("home/warden.db-wal");
    let mut peak_wal = 0;
    let ended = wait_until("the flood to end", Duration::from_secs(120), || {
        peak = peak.max(d.rss_mib());
        peak_wal = peak_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        let d = &d;
        let id = flood["id"].clone();
        async move {
            let e = d.execution(&id).await;
            (e["status"] != "running" && e["status"] != "queued").then_some(e)
        }
    })
    .await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert!(peak < 100.0, "the daemon grew to {peak:.0} MiB (idle {idle:.0} MiB) for 200 MB of output");
    assert!(peak_wal <= 64 << 20, "the WAL grew to {} MiB for 200 MB of output", peak_wal >> 20);
    let last = d.get_ok(&format!("/api/v1/executions/{}/output?tail=1", flood["id"])).await;
    assert_eq!(last["items"][0]["n"], LINES, "every line is kept");
    assert_eq!(last["items"][0]["text"].as_str().unwrap().len(), LINE);
    let events = follower.events_until(|e| e["type"] == "execution.finished").await;
    assert!(!events.is_empty(), "the follower was told the flood ended");
}

#[actix_web::test]
async fn an_agent_that_forks_hundreds_of_children_is_reaped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    // Agents cannot create files beside the data dir (the sandbox), only in a directory there.
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    let leader = dir.path().join("work/leader");

    // The leader leaves 300 children behind when it exits.
    let script = format!("echo $$ > {}; for i in $(seq 1 300); do sleep 600 & done; echo forked", leader.display());
    let left = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    let ended = d.wait_final(&left["id"]).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let pgid = read_pid_file(&leader).await;
    wait_until("the 300 children to be killed", Duration::from_secs(20), || {
        std::future::ready(group_members(pgid).is_empty().then_some(()))
    })
    .await;

    // The leader waits for its 300 children and is cancelled.
    std::fs::remove_file(&leader).unwrap();
    let script =
        format!("echo $$ > {}; for i in $(seq 1 300); do sleep 600 & done; echo forked; wait", leader.display());
    let waiting = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    let pgid = read_pid_file(&leader).await;
    wait_until("300 children", Duration::from_secs(20), || {
        std::future::ready((group_members(pgid).len() > 300).then_some(()))
    })
    .await;
    expect_json(d.post(&format!("/api/v1/executions/{}/cancel", waiting["id"]), &json!({})).await, StatusCode::OK)
        .await;
    let ended = d.wait_final(&waiting["id"]).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    wait_until("the group to be gone", Duration::from_secs(20), || {
        std::future::ready(group_members(pgid).is_empty().then_some(()))
    })
    .await;
}

#[actix_web::test]
async fn an_agent_that_closes_its_output_early_runs_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    let go = dir.path().join("go");
    let script = format!(
        "echo first; exec 1>&-; echo on-stderr >&2; exec 2>&-; while [ ! -e {} ]; do sleep 0.02; done; exit 7",
        go.display()
    );
    let e = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    wait_until("both lines", Duration::from_secs(20), || async {
        (d.output_text(&e["id"]).await == "first\non-stderr").then_some(())
    })
    .await;
    // Both pipes are closed, and the process still runs: so does the execution.
    assert_eq!(d.execution(&e["id"]).await["status"], "running");
    std::fs::write(&go, "").unwrap();
    let ended = d.wait_final(&e["id"]).await;
    assert_eq!((ended["status"].as_str(), ended["exit_code"].as_i64()), (Some("failed"), Some(7)), "{ended}");
}

/// One client's life, over and over until `until`: connect (WebSocket or SSE), take
/// the first live data, leave (politely or by dropping the connection). Returns how many
/// times it got in.
async fn churn(d: &Api, client: usize, until: std::time::Instant) -> u64 {
    use futures_util::StreamExt;
    let mut sessions: u64 = 0;
    while std::time::Instant::now() < until {
        if client.is_multiple_of(2) {
            let Ok(mut ws) = d.try_ws().await else { continue };
            ws.send_json(json!({ "type": "subscribe", "topics": ["*"] })).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.stream.next()).await;
            if sessions.is_multiple_of(2) {
                let _ = ws.stream.close(None).await;
            }
        } else {
            let Ok(response) = d.request(Method::GET, "/api/v1/events").send().await else { continue };
            if response.status() != StatusCode::OK {
                continue;
            }
            let mut response = response;
            let _ = tokio::time::timeout(Duration::from_millis(200), response.chunk()).await;
        }
        sessions += 1;
        let _ = d.client.get(d.url("/health")).send().await;
    }
    sessions
}

#[actix_web::test]
async fn five_hundred_clients_coming_and_going_for_a_minute_leak_nothing() {
    let seconds: u64 = std::env::var("WARDEN_CHURN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    const ROUNDS: u32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), "[server]\nmax_clients = 600\n").unwrap();
    let d = ServeProcess::start(&home).await;
    // Events keep flowing all along.
    let ticker = d.exec_with(json!({ "prompt": "while true; do echo tick; sleep 0.1; done", "cwd": dir.path() })).await;
    let connected = || async { d.get_ok("/api/v1/status").await["counts"]["clients"]["connected"].as_u64().unwrap() };

    // The minute in rounds; after each, once every client is gone, the daemon's RSS.
    let mut sessions = 0;
    let mut busiest = 0;
    let mut rss = Vec::new();
    for _ in 0..ROUNDS {
        let end = std::time::Instant::now() + Duration::from_secs(seconds) / ROUNDS;
        let clients: Vec<_> = (0..500).map(|c| churn(&d, c, end)).collect();
        let watching = async {
            let mut most = 0;
            while std::time::Instant::now() < end {
                most = most.max(connected().await);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            most
        };
        let (done, most) = futures_util::join!(futures_util::future::join_all(clients), watching);
        sessions += done.iter().sum::<u64>();
        busiest = busiest.max(most);
        wait_until("every client to be gone", Duration::from_secs(60), || async {
            (connected().await == 0).then_some(())
        })
        .await;
        rss.push(d.rss_mib());
    }
    let shown: Vec<String> = rss.iter().map(|r| format!("{r:.1}")).collect();
    assert!(busiest > 100, "the churn kept few clients connected ({busiest}): it tested little");
    assert!(sessions > 5_000, "only {sessions} client sessions in {seconds} s");
    // The first round sizes the daemon's pools and caches. The allocator keeps what later
    // rounds freed until the daemon hands it back (every 10 s): then the RSS is where the
    // first round left it, which it would not be if the sessions leaked.
    let baseline = rss[0];
    let settled = wait_until("the RSS to return to its first-round size", Duration::from_secs(40), || {
        let now = d.rss_mib();
        std::future::ready((now <= baseline * 1.05).then_some(now))
    })
    .await;
    eprintln!(
        "{sessions} client sessions in {seconds} s, up to {busiest} at once; RSS after each round (MiB): {}; \
         settled at {settled:.1}",
        shown.join(", ")
    );
    expect_json(d.post(&format!("/api/v1/executions/{}/cancel", ticker["id"]), &json!({})).await, StatusCode::OK).await;
    assert!(d.stop().await.success());
}
