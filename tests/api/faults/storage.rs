//! A disk that fills, a database another program locks, that is damaged or whose
//! companion files cannot be written, and the signals such trouble raises.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::workspace_names;
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
