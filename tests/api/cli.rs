//! The real `warden` binary: lifecycle commands against background daemons, and client
//! commands against an in-process daemon.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::*;

/// A temp data dir for background daemons; whatever still runs there is stopped on drop.
struct BackgroundHome {
    dir: TempDir,
}

impl BackgroundHome {
    fn new() -> Self {
        BackgroundHome { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(warden_bin())
            .args(args)
            .envs(env.iter().copied())
            .env("WARDEN_HOME", self.path())
            .env_remove("WARDEN_URL")
            .env_remove("WARDEN_TOKEN")
            .env_remove("RUST_LOG")
            .output()
            .expect("running warden")
    }

    fn server_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path().join("server.json")).unwrap()).unwrap()
    }
}

impl Drop for BackgroundHome {
    fn drop(&mut self) {
        let home = warden::home::Home::new(self.path());
        if let Some(pid) = home.running_pid() {
            let _ = self.run(&["stop"]);
            if home.running_pid().is_some() {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}

#[test]
fn start_status_stop_round_trip() {
    let home = BackgroundHome::new();
    let started = home.run(&["start", "--port", "0"]);
    assert_success(&started);
    let info = home.server_json();
    let url = info["url"].as_str().unwrap().to_owned();
    let pid = info["pid"].as_u64().unwrap();
    assert!(stdout(&started).contains(&url), "start prints the URL: {}", stdout(&started));
    assert!(stdout(&started).contains(&pid.to_string()), "start prints the pid");
    let token = std::fs::read_to_string(home.path().join("token")).unwrap();
    let dashboard = format!("dashboard: {url}/#token={}", token.trim());
    assert!(stdout(&started).contains(&dashboard), "start prints the dashboard URL: {}", stdout(&started));

    let status = home.run(&["status"]);
    assert_success(&status);
    assert!(stdout(&status).contains("is running") && stdout(&status).contains(&url), "{}", stdout(&status));

    let json = home.run(&["status", "--json"]);
    assert_success(&json);
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((json["running"].as_bool(), json["pid"].as_u64()), (Some(true), Some(pid)));

    let again = home.run(&["start", "--port", "0"]);
    assert_success(&again);
    assert!(stdout(&again).contains("already running"), "{}", stdout(&again));
    assert_eq!(home.server_json()["pid"].as_u64(), Some(pid), "the second start left the first daemon alone");

    let stopped = home.run(&["stop"]);
    assert_success(&stopped);
    assert!(!home.path().join("server.json").exists());
    assert!(!alive(pid as i64), "the daemon process is gone");

    let status = home.run(&["status"]);
    assert_eq!(status.status.code(), Some(3), "LSB: not running is 3");
    assert!(stdout(&status).contains("not running"));
    let json: Value = serde_json::from_slice(&home.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["running"], false);

    let stop_again = home.run(&["stop"]);
    assert_success(&stop_again);
    assert!(stdout(&stop_again).contains("not running"));
}

#[test]
fn a_stale_pid_file_is_cleaned_up_not_obeyed() {
    let home = BackgroundHome::new();
    std::fs::create_dir_all(home.path()).unwrap();
    // A live process that is not warden, and a dead pid: neither holds the lock.
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    for stale in [stranger.id().to_string(), "999999".to_string()] {
        std::fs::write(home.path().join("warden.pid"), &stale).unwrap();
        let status = home.run(&["status"]);
        assert_eq!(status.status.code(), Some(3), "a stale pid file does not mean running");
        std::fs::write(home.path().join("warden.pid"), &stale).unwrap();
        let started = home.run(&["start", "--port", "0"]);
        assert_success(&started);
        let pid = home.server_json()["pid"].as_u64().unwrap();
        assert_ne!(pid.to_string(), stale);
        assert_eq!(std::fs::read_to_string(home.path().join("warden.pid")).unwrap().trim(), pid.to_string());
        assert_success(&home.run(&["stop"]));
    }
    assert!(stranger.try_wait().unwrap().is_none(), "the stranger was not signalled");
    stranger.kill().unwrap();
    let _ = stranger.wait();
}

#[test]
fn a_busy_port_falls_back_to_a_free_one() {
    let home = BackgroundHome::new();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let started = home.run(&["start", "--port", &busy_port.to_string()]);
    assert_success(&started);
    let port = home.server_json()["port"].as_u64().unwrap();
    assert_ne!(port, busy_port as u64);
    assert!(stdout(&started).contains("busy"), "start says the port was busy: {}", stdout(&started));
    let log = std::fs::read_to_string(home.path().join("warden.log")).unwrap();
    assert!(log.contains(&format!("port {busy_port} is busy")), "{log}");
    assert_success(&home.run(&["status"]));
}

#[test]
fn a_failed_start_prints_the_reason_and_exits_non_zero() {
    let home = BackgroundHome::new();
    std::fs::create_dir_all(home.path()).unwrap();
    std::fs::write(home.path().join("config.toml"), "[server]\nprot = 1\n").unwrap();
    let started = home.run(&["start", "--port", "0"]);
    assert_eq!(started.status.code(), Some(1));
    assert!(stderr(&started).contains("prot"), "names the bad key: {}", stderr(&started));

    // A database file that is not a database: the daemon itself fails, start reports it.
    std::fs::remove_file(home.path().join("config.toml")).unwrap();
    std::fs::write(home.path().join("warden.db"), vec![b'x'; 8192]).unwrap();
    let started = home.run(&["start", "--port", "0"]);
    assert_eq!(started.status.code(), Some(1));
    assert!(stderr(&started).contains("warden.db"), "names the file: {}", stderr(&started));
    assert_eq!(home.run(&["status"]).status.code(), Some(3));
}

#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let home = BackgroundHome::new();
    let refused = home.run(&["start", "--host", "0.0.0.0", "--port", "0"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--allow-remote"), "{}", stderr(&refused));
    assert_eq!(home.run(&["status"]).status.code(), Some(3));
}

#[test]
fn serve_stops_gracefully_on_sigterm() {
    let home = BackgroundHome::new();
    let mut child = Command::new(warden_bin())
        .args(["serve", "--port", "0"])
        .env("WARDEN_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let server_json = home.path().join("server.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server_json.exists() {
        assert!(Instant::now() < deadline, "serve never wrote server.json");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    assert!(!server_json.exists());
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("SIGTERM") && log.contains("warden stopped"), "{log}");
}

#[actix_web::test]
async fn workspace_commands_round_trip() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let home = d.home.dir();

    let added = warden(home, &["workspace", "add", "app", path]).await;
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(stdout(&added).contains("app"));

    let listed = warden(home, &["workspace", "ls"]).await;
    assert!(stdout(&listed).contains("app") && stdout(&listed).contains(path), "{}", stdout(&listed));
    let json: Value = serde_json::from_slice(&warden(home, &["workspace", "ls", "--json"]).await.stdout).unwrap();
    assert_eq!(json[0]["name"], "app");

    let duplicate = warden(home, &["workspace", "add", "app", path]).await;
    assert_eq!(duplicate.status.code(), Some(1));
    let err = stderr(&duplicate);
    assert_eq!(err.trim().lines().count(), 1, "one readable line: {err}");
    assert!(err.contains("exists already") && err.contains("conflict"), "{err}");

    let removed = warden(home, &["workspace", "rm", "app", "--json"]).await;
    assert!(removed.status.success());
    let json: Value = serde_json::from_slice(&removed.stdout).unwrap();
    assert_eq!(json["name"], "app");
    let missing = warden(home, &["workspace", "rm", "app"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("not_found"));
}

#[actix_web::test]
async fn a_relative_workspace_path_is_taken_from_the_current_directory() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let output = tokio::process::Command::new(warden_bin())
        .args(["workspace", "add", "rel", "sub", "--json"])
        .env("WARDEN_HOME", d.home.dir())
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["path"], std::fs::canonicalize(dir.path().join("sub")).unwrap().to_str().unwrap());
}

#[actix_web::test]
async fn profile_and_provider_commands_show_the_catalog() {
    let d = spawn_daemon().await;
    let home = d.home.dir();
    let profiles = warden(home, &["profile", "ls"]).await;
    assert!(
        stdout(&profiles).contains("shell") && stdout(&profiles).contains("sh -c {prompt}"),
        "{}",
        stdout(&profiles)
    );
    let json: Value = serde_json::from_slice(&warden(home, &["profile", "ls", "--json"]).await.stdout).unwrap();
    let shell = json.as_array().unwrap().iter().find(|p| p["name"] == "shell").expect("shell is listed");
    assert_eq!((shell["format"].as_str(), shell["installed"].as_bool()), (Some("text"), Some(true)));
    let table = stdout(&profiles);
    let claude_row = table.lines().find(|l| l.starts_with("claude")).expect("claude is listed");
    assert!(claude_row.contains("claude-stream-json"), "{table}");

    let set = warden(home, &["provider", "set", "local", "--max-concurrent", "3"]).await;
    assert!(set.status.success(), "{}", stderr(&set));
    let set = warden(home, &["provider", "set", "local", "--rate-per-minute", "12"]).await;
    assert!(set.status.success(), "{}", stderr(&set));
    let json: Value = serde_json::from_slice(&warden(home, &["provider", "ls", "--json"]).await.stdout).unwrap();
    let local = json.as_array().unwrap().iter().find(|p| p["name"] == "local").expect("local is listed");
    assert_eq!((local["max_concurrent"].as_u64(), local["rate_per_minute"].as_u64()), (Some(3), Some(12)));
    let table = stdout(&warden(home, &["provider", "ls"]).await);
    assert!(table.contains("local") && table.contains("12"), "{table}");
}

#[actix_web::test]
async fn client_commands_honour_url_and_token_overrides() {
    let d = spawn_daemon().await;
    let elsewhere = tempfile::tempdir().unwrap();
    let ok = tokio::process::Command::new(warden_bin())
        .args(["profile", "ls", "--json"])
        .env("WARDEN_HOME", elsewhere.path())
        .env("WARDEN_URL", &d.base_url)
        .env("WARDEN_TOKEN", &d.token)
        .output()
        .await
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let wrong = tokio::process::Command::new(warden_bin())
        .args(["profile", "ls", "--url", &d.base_url, "--token", "wrong"])
        .env("WARDEN_HOME", elsewhere.path())
        .output()
        .await
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("unauthorized"), "{}", stderr(&wrong));
    let nowhere = tokio::process::Command::new(warden_bin())
        .args(["profile", "ls"])
        .env("WARDEN_HOME", elsewhere.path())
        .env_remove("WARDEN_URL")
        .env_remove("WARDEN_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(stderr(&nowhere).contains("warden start"), "says how to fix it: {}", stderr(&nowhere));
}

#[actix_web::test]
async fn exec_follow_prints_the_output_and_exits_with_the_execution_s_code() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(warden_bin())
        .args(["exec", "--follow", "echo out; echo err >&2; pwd; exit 7"])
        .env("WARDEN_HOME", d.home.dir())
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(7), "stderr: {}", stderr(&output));
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(stdout(&output), format!("out\n{}\n", cwd.display()), "runs in the current directory by default");
    assert_eq!(stderr(&output), "err\n");

    let ok = warden(d.home.dir(), &["exec", "-f", "--cwd", "/tmp", "echo", "several", "words"]).await;
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(stdout(&ok), "several words\n");
}

#[actix_web::test]
async fn exec_prints_the_id_and_the_other_commands_find_it() {
    let d = spawn_for_executions().await;
    let home = d.home.dir();
    let created = warden(home, &["exec", "--cwd", "/tmp", "--env", "GREETING=hello", "echo $GREETING; sleep 30"]).await;
    assert!(created.status.success(), "{}", stderr(&created));
    let id = stdout(&created).trim().to_owned();
    assert!(id.parse::<i64>().is_ok(), "prints the id: {id:?}");
    d.wait_status(&serde_json::json!(id.parse::<i64>().unwrap()), "running").await;

    let listed = stdout(&warden(home, &["ls"]).await);
    assert!(listed.contains(&id) && listed.contains("running") && listed.contains("echo $GREETING"), "{listed}");
    let json: Value =
        serde_json::from_slice(&warden(home, &["ls", "--status", "running", "--json"]).await.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);

    let shown = stdout(&warden(home, &["show", &id]).await);
    assert!(shown.contains("running") && shown.contains("/tmp"), "{shown}");

    let paused = warden(home, &["pause", &id]).await;
    assert!(stdout(&paused).contains("paused"), "{}", stdout(&paused));
    let again = warden(home, &["pause", &id]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("cannot pause"), "{}", stderr(&again));
    assert!(stdout(&warden(home, &["resume", &id]).await).contains("running"));

    let cancelled = warden(home, &["cancel", &id]).await;
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let execution = d.wait_final(&serde_json::json!(id.parse::<i64>().unwrap())).await;
    assert_eq!(execution["status"], "cancelled");

    let logs = warden(home, &["logs", &id]).await;
    assert_eq!(stdout(&logs), "hello\n");
    let follow = warden(home, &["logs", "-f", &id]).await;
    assert_eq!(stdout(&follow), stdout(&logs), "logs -f of an ended execution prints the same and stops");
    assert_eq!(follow.status.code(), Some(1), "a cancelled execution has no exit code of its own");

    let retried = warden(home, &["retry", &id]).await;
    assert!(stdout(&retried).contains(&format!("retry of {id}")), "{}", stdout(&retried));

    let missing = warden(home, &["show", "9999"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no execution 9999"), "{}", stderr(&missing));
}

#[actix_web::test]
async fn logs_follow_prints_exactly_what_logs_prints_even_for_a_burst() {
    let d = spawn_for_executions().await;
    let home = d.home.dir();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("go");
    // Follow from before the burst, so the lines arrive live (and partly skipped).
    let script =
        format!("echo first; while [ ! -e {} ]; do sleep 0.02; done; seq 1 50000; echo oops >&2", gate.display());
    let id = d.exec(&script).await["id"].to_string();
    wait_until("the first line", Duration::from_secs(10), || async {
        (!d.output(&serde_json::json!(id.parse::<i64>().unwrap())).await.is_empty()).then_some(())
    })
    .await;
    let follower = tokio::process::Command::new(warden_bin())
        .args(["logs", "-f", &id])
        .env("WARDEN_HOME", home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(&gate, "").unwrap();
    let followed = follower.wait_with_output().await.unwrap();
    assert_eq!(followed.status.code(), Some(0), "{}", stderr(&followed));
    let whole = warden(home, &["logs", &id]).await;
    assert_eq!(stdout(&followed).lines().count(), 50_001);
    assert!(stdout(&followed) == stdout(&whole), "logs -f and logs print the same lines");
    assert_eq!(stderr(&followed), "oops\n");
}

#[actix_web::test]
async fn events_tails_the_event_stream() {
    let d = spawn_for_executions().await;
    let mut tail = tokio::process::Command::new(warden_bin())
        .args(["events", "--topics", "execution.finished", "--json"])
        .env("WARDEN_HOME", d.home.dir())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait until it is connected: it holds a client slot.
    wait_until("the tail to connect", Duration::from_secs(10), || async {
        (d.get_ok("/api/v1/status").await["counts"]["clients"]["connected"] == 1).then_some(())
    })
    .await;
    let id = d.exec("true").await["id"].clone();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!((event["type"].as_str(), &event["execution_id"]), (Some("execution.finished"), &id));
    tail.kill().await.unwrap();
}

#[test]
fn the_daemon_log_rotates_by_size_and_never_holds_the_token() {
    let home = BackgroundHome::new();
    let started = home.run_with(&["-vv", "start", "--port", "0"], &[("WARDEN_LOG_MAX_BYTES", "4096")]);
    assert_success(&started);
    let token = std::fs::read_to_string(home.path().join("token")).unwrap().trim().to_owned();
    // Requests (each logged at debug level), some with the token in the query.
    for _ in 0..60 {
        assert_success(&home.run(&["status"]));
        assert_success(&home.run(&["ls"]));
    }
    let url = home.server_json()["url"].as_str().unwrap().to_owned();
    let fetch = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()";
    let with_query =
        Command::new("python3").args(["-c", fetch, &format!("{url}/api/v1/status?token={token}")]).output();
    assert_success(&with_query.expect("python3 runs"));
    assert_success(&home.run(&["stop"]));
    let log = home.path().join("warden.log");
    assert!(std::fs::metadata(&log).unwrap().len() <= 4096 + 1024, "the current log stays near its limit");
    let rotated: Vec<PathBuf> = (1..=3).map(|n| home.path().join(format!("warden.log.{n}"))).collect();
    assert!(rotated.iter().all(|p| p.exists()), "three rotated files are kept");
    assert!(!home.path().join("warden.log.4").exists(), "older ones are dropped");
    for file in rotated.iter().chain([&log]) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.contains(&token), "{} holds the token", file.display());
    }
    let current = std::fs::read_to_string(&log).unwrap();
    assert!(current.contains("warden stopped"), "the newest lines are in warden.log: {current}");
}

#[actix_web::test]
async fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = spawn_for_executions().await;
    for _ in 0..3 {
        d.wait_final(&d.exec("true").await["id"]).await;
    }
    for args in [vec!["ls"], vec!["approvals", "--all"], vec!["logs", "1"]] {
        // The reader is gone before the first line is written (`warden ls | head -0`).
        let mut child = tokio::process::Command::new(warden_bin())
            .args(&args)
            .env("WARDEN_HOME", d.home.dir())
            .env_remove("WARDEN_URL")
            .env_remove("WARDEN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().await.unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(!said.contains("panicked"), "warden {args:?}: {said}");
        assert_ne!(output.status.code(), Some(101), "warden {args:?} panicked");
        assert!(
            output.status.success() || output.status.signal() == Some(libc::SIGPIPE),
            "warden {args:?}: {:?} {said}",
            output.status
        );
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_and_need_no_data_dir() {
    let nowhere = BackgroundHome::new();
    // bash reads the script without an error, and it knows the newest commands.
    let bash = nowhere.run(&["completions", "bash"]);
    assert_success(&bash);
    let script = stdout(&bash);
    assert!(script.contains("merge") && script.contains("discard") && script.contains("--isolated"), "{script}");
    let mut check = Command::new("bash").arg("-n").stdin(std::process::Stdio::piped()).spawn().expect("bash runs");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(check.wait().unwrap().success(), "bash -n refused the completion script");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let output = nowhere.run(&["completions", shell]);
        assert_success(&output);
        assert!(stdout(&output).contains("merge"), "{shell}: {}", stdout(&output));
    }
    let unknown = nowhere.run(&["completions", "tcsh"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("possible values"), "{}", stderr(&unknown));

    let man = nowhere.run(&["man"]);
    assert_success(&man);
    let page = stdout(&man);
    assert!(page.starts_with(".ie") && page.contains(".TH warden 1"), "{page}");
    assert!(page.contains("warden\\-merge(1)") && page.contains("SEE ALSO"), "{page}");
    assert!(!nowhere.path().exists(), "a data dir was made for them");
}

#[test]
fn warden_doctor_says_what_is_wrong_and_fails_on_a_readable_token() {
    use std::os::unix::fs::PermissionsExt;
    let home = BackgroundHome::new();
    std::fs::create_dir_all(home.path()).unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "[profiles.ghost]\nprovider = \"local\"\ncommand = [\"no-such-agent-7f3a\", \"{prompt}\"]\n",
    )
    .unwrap();
    assert_success(&home.run(&["start", "--port", "0"]));
    let findings = |output: &Output| -> Vec<Value> { serde_json::from_slice(&output.stdout).unwrap() };
    let level = |findings: &[Value], check: &str, detail: &str| {
        let found = findings.iter().find(|f| f["check"] == check && f["detail"].as_str().unwrap().contains(detail));
        found.unwrap_or_else(|| panic!("no {check} finding about {detail:?} in {findings:?}"))["level"].clone()
    };

    // A healthy daemon: nothing fails; the missing agent program is a warning.
    let healthy = home.run(&["doctor", "--json"]);
    assert_success(&healthy);
    let report = findings(&healthy);
    for (check, detail) in
        [("daemon", "answers at"), ("database", "integrity ok"), ("token", "mode 600"), ("git", "git")]
    {
        assert_eq!(level(&report, check, detail), "ok", "{report:?}");
    }
    assert_eq!(level(&report, "profile", "no-such-agent-7f3a is not on PATH"), "warn");
    assert_eq!(level(&report, "profile", "shell: sh found"), "ok");
    assert_eq!(level(&report, "retention", "output kept 30 days, the newest 100 executions whole"), "ok");
    // The data dir was made by hand, open to others: said, with the fix.
    assert_eq!(level(&report, "data dir", "open to other users (mode 755)"), "warn");

    // A token other users can read fails, with the fix, and the exit status says so.
    let token = home.path().join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broken = home.run(&["doctor"]);
    assert_eq!(broken.status.code(), Some(1), "{}", stdout(&broken));
    let text = stdout(&broken);
    assert!(text.contains("FAIL  token") && text.contains("chmod 600"), "{text}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_success(&home.run(&["stop"]));
    // Without a daemon: a warning, not a failure.
    let stopped = home.run(&["doctor", "--json"]);
    assert_success(&stopped);
    assert_eq!(level(&findings(&stopped), "daemon", "not running"), "warn");
    // The configured port, taken by something else: the next start would move; free: ok.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    std::fs::write(home.path().join("config.toml"), format!("[server]\nport = {port}\n{config}")).unwrap();
    let busy = home.run(&["doctor", "--json"]);
    assert_eq!(level(&findings(&busy), "port", "is taken"), "warn");
    drop(taken);
    let free = home.run(&["doctor", "--json"]);
    assert_eq!(level(&findings(&free), "port", &format!("127.0.0.1:{port} is free")), "ok");
    // Retention turned off: said, with what to do.
    std::fs::write(home.path().join("config.toml"), format!("{config}[retention]\nenabled = false\n")).unwrap();
    let off = home.run(&["doctor", "--json"]);
    assert_eq!(level(&findings(&off), "retention", "off: output and events are kept forever"), "warn");
    // A database past its cap: said, with what to do.
    let conn = rusqlite::Connection::open(home.path().join("warden.db")).unwrap();
    conn.execute("INSERT INTO events (seq, type, json) VALUES (1000000, 'test.filler', ?1)", ["x".repeat(3 << 20)])
        .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    drop(conn);
    std::fs::write(home.path().join("config.toml"), format!("{config}[retention]\nmax_db_mb = 1\n")).unwrap();
    let over = home.run(&["doctor", "--json"]);
    assert_eq!(level(&findings(&over), "retention", "over max_db_mb = 1"), "warn");
}

/// `warden service …` with its own HOME (where the unit goes) and data dir.
async fn service(home: &Path, data: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(warden_bin())
        .args(["--home", data.to_str().unwrap(), "service"])
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("WARDEN_HOME")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running warden")
}

async fn systemd_verify(unit: &Path) -> Output {
    tokio::process::Command::new("systemd-analyze")
        .args(["verify", unit.to_str().unwrap()])
        .output()
        .await
        .expect("systemd-analyze is installed by scripts/test-deps.sh (the systemd package)")
}

#[actix_web::test]
async fn warden_service_writes_a_systemd_unit_that_systemd_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (home, data) = (dir.path().join("me"), dir.path().join("warden data"));
    std::fs::create_dir_all(&home).unwrap();
    let status = service(&home, &data, &["status"]).await;
    assert_eq!(status.status.code(), Some(3), "{}", stdout(&status));
    assert!(stdout(&status).contains("not installed"));

    let installed = service(&home, &data, &["install"]).await;
    assert!(installed.status.success(), "{}", stderr(&installed));
    assert!(stdout(&installed).contains("systemctl --user daemon-reload && systemctl --user enable --now warden"));
    let unit_path = home.join(".config/systemd/user/warden.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exe = warden_bin().canonicalize().unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart=\"{}\" --home \"{}\" serve --log-file \"{}/warden.log\"",
            exe.display(),
            data.display(),
            data.display()
        )),
        "{unit}"
    );
    assert!(unit.contains("Restart=on-failure") && unit.contains("WantedBy=default.target"), "{unit}");
    // systemd itself accepts it — and refuses a broken one, so the check can fail.
    let verified = systemd_verify(&unit_path).await;
    assert!(verified.status.success(), "{}{}", stdout(&verified), stderr(&verified));
    let broken = dir.path().join("broken.service");
    std::fs::write(&broken, unit.replace(&exe.display().to_string(), "/nonexistent/warden")).unwrap();
    assert!(!systemd_verify(&broken).await.status.success(), "systemd-analyze verify must refuse a bad unit");

    let status = service(&home, &data, &["status"]).await;
    assert!(status.status.success());
    assert!(stdout(&status).contains("(current)"), "{}", stdout(&status));
    // Written for another data dir, it says so.
    let elsewhere = service(&home, &dir.path().join("other"), &["status"]).await;
    assert!(stdout(&elsewhere).contains("written for another binary, data dir or PATH"), "{}", stdout(&elsewhere));

    let removed = service(&home, &data, &["uninstall"]).await;
    assert!(removed.status.success());
    assert!(stdout(&removed).contains("systemctl --user disable --now warden"));
    assert!(!unit_path.exists());
    assert_eq!(service(&home, &data, &["status"]).await.status.code(), Some(3));
}
