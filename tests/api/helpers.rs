//! `spawn_daemon()` and friends: a real daemon per test, built by the same
//! `Daemon::build` that `warden serve` uses, plus polling with deadlines.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use warden::config::Config;
use warden::daemon::{Daemon, DaemonHandle};
use warden::home::Home;

/// A daemon's API as a client sees it: its URL, its token and an HTTP client. Both kinds
/// of test daemon (in process, and the real binary) deref to it.
pub struct Api {
    pub base_url: String,
    pub token: String,
    pub client: reqwest::Client,
}

impl Api {
    pub fn new(base_url: String, token: String) -> Api {
        Api { base_url, token, client: reqwest::Client::new() }
    }
}

/// A daemon in this test process, built by `Daemon::build`.
pub struct TestDaemon {
    pub api: Api,
    pub home: Home,
    pub port: u16,
    handle: DaemonHandle,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Kept so the data dir lives as long as the daemon; `None` for a reused home.
    _dir: Option<TempDir>,
}

fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug").with_test_writer().try_init();
    }
}

/// A daemon with default settings in a fresh temp home.
pub async fn spawn_daemon() -> TestDaemon {
    spawn_with(|_| {}).await
}

/// A daemon in a fresh temp home, after `customize` had its say on the config.
pub async fn spawn_with(customize: impl FnOnce(&mut Config)) -> TestDaemon {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = Home::new(dir.path().join("home"));
    let mut daemon = spawn_in(home, customize).await;
    daemon._dir = Some(dir);
    daemon
}

/// A daemon for executions in a fresh temp home whose `config.toml` says `config` (read
/// again at every restart).
pub async fn spawn_with_config_file(config: &str) -> TestDaemon {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = Home::new(dir.path().join("home"));
    home.ensure().expect("the home is made");
    std::fs::write(home.config_path(), config).expect("config.toml is written");
    let mut daemon = spawn_in(home, |c| c.kill_grace = Duration::from_millis(300)).await;
    daemon._dir = Some(dir);
    daemon
}

/// A daemon on an existing home (for restarts). `config.toml` there is read.
pub async fn spawn_in(home: Home, customize: impl FnOnce(&mut Config)) -> TestDaemon {
    init_logging();
    let mut config = Config::load(home.clone(), &Default::default()).expect("config");
    config.port = 0;
    customize(&mut config);
    let daemon = Daemon::build(config).await.expect("daemon builds");
    let handle = daemon.handle();
    let (base_url, token, port) = (daemon.url.clone(), daemon.token.clone(), daemon.addr.port());
    let (done, stopped) = tokio::sync::oneshot::channel();
    actix_web::rt::spawn(async move {
        daemon.run_until_stopped().await.expect("daemon ran");
        let _ = done.send(());
    });
    TestDaemon { api: Api::new(base_url, token), home, port, handle, stopped: Some(stopped), _dir: None }
}

impl std::ops::Deref for TestDaemon {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A request with the token set.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path).json(body).send().await.expect("POST")
    }

    pub async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(Method::PUT, path).json(body).send().await.expect("PUT")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.request(Method::DELETE, path).send().await.expect("DELETE")
    }

    /// GET that must answer 200; returns the JSON body.
    pub async fn get_ok(&self, path: &str) -> Value {
        expect_json(self.get(path).await, StatusCode::OK).await
    }
}

impl TestDaemon {
    /// Graceful stop; waits until the daemon has exited and released its home. The
    /// home is kept until the returned value is dropped or started again.
    pub async fn stop(mut self) -> Stopped {
        self.handle.shutdown().await;
        if let Some(stopped) = self.stopped.take() {
            tokio::time::timeout(Duration::from_secs(30), stopped).await.expect("daemon stops").ok();
        }
        Stopped { home: self.home.clone(), dir: self._dir.take() }
    }

    /// Stops this daemon and starts a new one on the same data dir.
    pub async fn restart(self) -> TestDaemon {
        self.stop().await.start().await
    }
}

/// A stopped test daemon's data dir.
pub struct Stopped {
    pub home: Home,
    dir: Option<TempDir>,
}

impl Stopped {
    /// A new daemon on the same data dir.
    pub async fn start(self) -> TestDaemon {
        let mut next = spawn_in(self.home, |_| {}).await;
        next._dir = self.dir;
        next
    }
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: reqwest::Response, status: StatusCode) -> Value {
    let actual = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    if !status.is_success() {
        assert!(
            content_type.starts_with("application/problem+json"),
            "errors are problems, got {content_type}: {text}"
        );
    }
    body
}

/// Asserts an RFC 9457 problem with this status and code; returns it.
pub async fn expect_problem(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let body = expect_json(response, status).await;
    assert_eq!(body["code"], code, "problem code; body: {body}");
    assert_eq!(body["status"], status.as_u16(), "problem status; body: {body}");
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string(), "{body}");
    body
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `warden` binary built for these tests.
pub fn warden_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_warden"))
}

/// Runs the real `warden` with this home, without blocking the test's runtime (the
/// in-process daemon's actors live on it).
pub async fn warden(home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(warden_bin())
        .args(args)
        .env("WARDEN_HOME", home)
        .env_remove("WARDEN_URL")
        .env_remove("WARDEN_TOKEN")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("running warden")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Everything tests usually want from a daemon for executions: a short kill grace.
pub async fn spawn_for_executions() -> TestDaemon {
    spawn_with(|c| c.kill_grace = Duration::from_millis(300)).await
}

impl Api {
    /// POSTs an execution of the shell profile in `cwd` (default: the system temp dir);
    /// it must be accepted (201).
    pub async fn exec(&self, prompt: &str) -> Value {
        self.exec_with(serde_json::json!({ "prompt": prompt, "cwd": std::env::temp_dir() })).await
    }

    pub async fn exec_with(&self, body: Value) -> Value {
        expect_json(self.post("/api/v1/executions", &body).await, StatusCode::CREATED).await
    }

    pub async fn execution(&self, id: &Value) -> Value {
        self.get_ok(&format!("/api/v1/executions/{id}")).await
    }

    /// Polls until the execution's status satisfies `done`; returns it.
    pub async fn wait_for(&self, id: &Value, what: &str, done: impl Fn(&str) -> bool) -> Value {
        wait_until(&format!("execution {id} to be {what}"), Duration::from_secs(30), || async {
            let execution = self.execution(id).await;
            done(execution["status"].as_str().unwrap_or("")).then_some(execution)
        })
        .await
    }

    pub async fn wait_status(&self, id: &Value, status: &str) -> Value {
        self.wait_for(id, status, |s| s == status).await
    }

    pub async fn wait_final(&self, id: &Value) -> Value {
        self.wait_for(id, "final", |s| {
            matches!(s, "succeeded" | "failed" | "cancelled" | "denied" | "timed_out" | "interrupted")
        })
        .await
    }

    /// Every stored output line, paging through `/output`.
    pub async fn output(&self, id: &Value) -> Vec<Value> {
        let mut lines = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get_ok(&format!("/api/v1/executions/{id}/output?after={after}&limit=10000")).await;
            let items = page["items"].as_array().unwrap();
            lines.extend(items.iter().cloned());
            if page["next_cursor"].is_null() {
                return lines;
            }
            after = items.last().unwrap()["n"].as_u64().unwrap();
        }
    }

    /// The stored output's text, lines joined by newlines.
    pub async fn output_text(&self, id: &Value) -> String {
        self.output(id).await.iter().map(|l| l["text"].as_str().unwrap().to_owned()).collect::<Vec<_>>().join("\n")
    }

    pub async fn set_limits(&self, provider: &str, max_concurrent: u32, rate_per_minute: u32) {
        let body = serde_json::json!({ "max_concurrent": max_concurrent, "rate_per_minute": rate_per_minute });
        expect_json(self.put(&format!("/api/v1/providers/{provider}"), &body).await, StatusCode::OK).await;
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with(['Z', 'X'])).unwrap_or(true))
        .unwrap_or(false)
}

/// Waits until a file holds a pid (written by a test script); returns it.
pub async fn read_pid_file(path: &Path) -> i64 {
    wait_until(&format!("pid in {}", path.display()), Duration::from_secs(20), || async {
        std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok())
    })
    .await
}

/// A WebSocket client of the daemon (real tungstenite over TCP).
pub struct WsClient {
    pub stream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Api {
    /// Connects to `/api/v1/ws` with the token; returns the client and its hello.
    pub async fn ws(&self) -> (WsClient, Value) {
        let mut client = self.try_ws().await.expect("WebSocket connects");
        let hello = client.next_json().await.expect("hello");
        assert_eq!(hello["type"], "hello", "{hello}");
        (client, hello)
    }

    pub async fn try_ws(&self) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}/api/v1/ws", self.base_url.replace("http://", "ws://"));
        let mut request = url.into_client_request()?;
        request.headers_mut().insert("Authorization", format!("Bearer {}", self.token).parse().unwrap());
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { stream })
    }
}

impl WsClient {
    pub async fn send_json(&mut self, value: Value) {
        use futures_util::SinkExt;
        self.stream.send(tokio_tungstenite::tungstenite::Message::Text(value.to_string().into())).await.expect("send");
    }

    /// The next JSON text frame, or `None` if the connection ended. Panics after 30 s.
    pub async fn next_json(&mut self) -> Option<Value> {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let frame =
                tokio::time::timeout(Duration::from_secs(30), self.stream.next()).await.expect("a frame within 30 s");
            match frame {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).expect("JSON frame")),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads events until `done` says stop; returns them (envelopes). Gives up after a
    /// minute.
    pub async fn events_until(&mut self, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut events = Vec::new();
        loop {
            assert!(std::time::Instant::now() < deadline, "the awaited event never came");
            let message = self.next_json().await.expect("the connection stays open");
            if message["type"] != "event" {
                continue;
            }
            let event = message["event"].clone();
            let stop = done(&event);
            events.push(event);
            if stop {
                return events;
            }
        }
    }
}

impl WsClient {
    /// An execution's output line numbers as a client sees them: live `execution.output`
    /// events, plus the ranges a `skipped` notice names, fetched from the history (as
    /// the protocol asks), until the execution's `execution.finished`.
    pub async fn output_lines(&mut self, d: &Api, execution_id: &Value) -> (Vec<u64>, u64) {
        let client = warden::client::Client::new(&d.base_url, &d.token);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut lines: Vec<(u64, u64)> = Vec::new();
        let mut skipped_notices = 0;
        loop {
            assert!(std::time::Instant::now() < deadline, "execution {execution_id} never finished for this client");
            let message = self.next_json().await.expect("the connection stays open");
            if message["type"] == "skipped" {
                skipped_notices += 1;
                let (from, to) = (message["from_seq"].as_u64().unwrap(), message["to_seq"].as_u64().unwrap());
                let missed = client.events_between("execution.output", execution_id.as_i64(), from, to).await.unwrap();
                lines.extend(missed.iter().map(|e| (e.seq, e.data["n"].as_u64().unwrap())));
                continue;
            }
            let event = &message["event"];
            if message["type"] != "event" || event["execution_id"] != *execution_id {
                continue;
            }
            match event["type"].as_str() {
                Some("execution.output") => {
                    lines.push((event["seq"].as_u64().unwrap(), event["data"]["n"].as_u64().unwrap()))
                }
                Some("execution.finished") => break,
                _ => {}
            }
        }
        lines.sort();
        (lines.into_iter().map(|(_, n)| n).collect(), skipped_notices)
    }
}

/// Checks `numbers` is exactly 1..=n without printing a huge list when it is not.
pub fn assert_all_lines(numbers: &[u64], n: u64) {
    assert_eq!(numbers.len() as u64, n, "expected {n} lines, got {}", numbers.len());
    if let Some((i, got)) = numbers.iter().enumerate().find(|(i, got)| **got != *i as u64 + 1) {
        panic!("line {} is {got}: lines are missing, doubled or out of order", i + 1);
    }
}

/// Reads a raw SSE response until `done`; returns (id, event, data) triples.
pub async fn read_sse(
    response: reqwest::Response,
    mut done: impl FnMut(&str, &str) -> bool,
) -> Vec<(Option<u64>, String, String)> {
    let mut stream = response;
    let mut buffer = String::new();
    let mut messages = Vec::new();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.chunk()).await.expect("SSE data within 30 s");
        let Some(chunk) = chunk.expect("SSE chunk") else { return messages };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, "message".to_owned(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.to_owned();
                } else if line.starts_with(':') {
                    event = "comment".to_owned();
                    data = line.to_owned();
                }
            }
            let stop = done(&event, &data);
            messages.push((id, event, data));
            if stop {
                return messages;
            }
        }
    }
}

/// The real `warden serve` as a child process, for faults that need a process of its
/// own: kill -9, resource limits, its RSS. Killed on drop.
pub struct ServeProcess {
    pub api: Api,
    pub home: PathBuf,
    pub pid: i32,
    child: tokio::process::Child,
}

impl std::ops::Deref for ServeProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl ServeProcess {
    /// Starts `warden serve --port 0` on `home` (its stderr appended to `serve.log`
    /// beside it) and waits until it answers.
    pub async fn start(home: &Path) -> ServeProcess {
        Self::start_with_env(home, &[]).await
    }

    /// Like [`ServeProcess::start`], with these environment variables set for the daemon.
    pub async fn start_with_env(home: &Path, env: &[(&str, &str)]) -> ServeProcess {
        let mut child = Self::spawn(home, env);
        let pid = child.id().expect("warden serve runs") as i32;
        let deadline = Instant::now() + Duration::from_secs(30);
        let info = loop {
            // A server.json left by a killed daemon names another pid.
            if let Some(info) =
                Home::new(home.to_path_buf()).read_server_info().ok().filter(|info| info.pid == pid as u32)
            {
                break info;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                // Say why: what the daemon logged (its last lines) and whether it still runs.
                let log = std::fs::read_to_string(home.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("warden serve did not listen (exited: {exited:?}); its log ends:\n{}", tail.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let token = std::fs::read_to_string(home.join("token")).expect("token").trim().to_owned();
        let api = Api::new(info.url, token);
        wait_until("/health", Duration::from_secs(30), || async {
            api.client.get(api.url("/health")).send().await.ok().filter(|r| r.status().is_success())
        })
        .await;
        ServeProcess { api, home: home.to_path_buf(), pid, child }
    }

    /// Runs `warden serve` for a start that should fail; panics if it keeps running.
    pub async fn run_to_end(home: &Path) -> Output {
        let run = Self::spawn(home, &[]).wait_with_output();
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("warden serve should have refused to start")
            .expect("warden serve ran")
    }

    fn spawn(home: &Path, env: &[(&str, &str)]) -> tokio::process::Child {
        std::fs::create_dir_all(home).expect("home");
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(home.with_extension("log")).expect("serve log");
        tokio::process::Command::new(warden_bin())
            .args(["serve", "--port", "0"])
            .env("WARDEN_HOME", home)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning warden serve")
    }

    /// Waits until it ends by itself (or by a signal sent to it); its exit status.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("ends").expect("reaped")
    }

    /// SIGKILL, and waits until it is gone.
    pub async fn kill_9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }

    /// SIGTERM (a graceful stop), and waits until it is gone; returns its exit status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGTERM)
            .expect("SIGTERM");
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.expect("stops").expect("reaped")
    }

    /// Resident memory in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

/// A directory outside those `workspace-write` lets every agent write (`/tmp`, `/var/tmp`,
/// `$TMPDIR`): cargo's temp dir for tests when the checkout is elsewhere, else a
/// directory in `$HOME` (removed with the repository in it).
pub fn outside_scratch_dirs() -> std::path::PathBuf {
    let scratch: Vec<std::path::PathBuf> = ["/tmp", "/var/tmp"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .chain(std::env::var_os("TMPDIR").map(std::path::PathBuf::from))
        .filter_map(|dir| dir.canonicalize().ok())
        .collect();
    let home = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".warden-test-repos"));
    [Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))), home]
        .into_iter()
        .flatten()
        .find(|dir| {
            std::fs::create_dir_all(dir).is_ok()
                && dir.canonicalize().is_ok_and(|dir| !scratch.iter().any(|s| dir.starts_with(s)))
        })
        .expect("a directory outside /tmp, /var/tmp and $TMPDIR (cargo's target dir or $HOME) for this test")
}

/// The agent events of a captured Claude Code run with one tool call: Claude reports
/// usage with each model response and its totals at the end.
pub const CLAUDE_TOOL_RUN: [&str; 8] = [
    "agent.started",
    "agent.usage",
    "agent.tool_call",
    "agent.tool_result",
    "agent.usage",
    "agent.message",
    "agent.usage",
    "agent.result",
];

/// The agent events of a Codex or Gemini run with one tool call: usage comes once, at
/// the end.
pub const TOOL_RUN: [&str; 6] =
    ["agent.started", "agent.tool_call", "agent.tool_result", "agent.message", "agent.usage", "agent.result"];
