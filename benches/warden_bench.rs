//! `warden-bench`: starts a real daemon (`warden serve`) in a temp home as a separate
//! process, drives it over its public API, prints each figure as `name: value` and, with
//! `--write`, rewrites the results table in BENCHMARKS.md. Run it with `make bench`
//! (`cargo bench --bench warden-bench -- [b1 b2 …] [--write]`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use warden::client::Client;
use warden::home::Home;

/// A daemon process in a temp home, killed on drop.
struct BenchDaemon {
    child: Child,
    client: Client,
    _dir: tempfile::TempDir,
}

impl BenchDaemon {
    fn home(&self) -> Home {
        Home::new(self._dir.path().join("home"))
    }

    /// Stops the daemon gracefully and hands its home back, to seed or start again.
    fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the daemon stopped with {status}");
        }
        // Nothing left to kill on drop; the home is taken out of it.
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir()?);
        Ok(dir)
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The `warden` binary cargo built for this bench (same profile: optimised), or the one
/// `WARDEN_BENCH_EXE` names, so that another build (e.g. the commit before a change) is
/// measured by the same workloads.
fn warden_exe() -> PathBuf {
    std::env::var_os("WARDEN_BENCH_EXE").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_warden")), PathBuf::from)
}

async fn start_daemon(config: &str) -> anyhow::Result<BenchDaemon> {
    let dir = tempfile::tempdir()?;
    start_daemon_in(dir, config).await
}

/// A daemon on the home in `dir` (made if new), with `config` as its config file.
async fn start_daemon_in(dir: tempfile::TempDir, config: &str) -> anyhow::Result<BenchDaemon> {
    let home = Home::new(dir.path().join("home"));
    home.ensure()?;
    std::fs::write(home.config_path(), config)?;
    let _ = std::fs::remove_file(home.server_json_path());
    let child = Command::new(warden_exe())
        .args(["serve", "--port", "0"])
        .env("WARDEN_HOME", home.dir())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting warden serve")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(info) = home.read_server_info() {
            let client = Client::new(&info.url, home.read_token()?);
            if client.health().await.is_ok() {
                return Ok(BenchDaemon { child, client, _dir: dir });
            }
        }
        if Instant::now() > deadline {
            bail!("the daemon did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Waits until the daemon has no queued or running execution.
async fn wait_idle(client: &Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let status: Value = client.get("/api/v1/status").await?;
        let counts = &status["counts"];
        if counts["executions_queued"] == 0 && counts["executions_running"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("still busy after {timeout:?}: {counts}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A profile like the built-in `shell` but unsandboxed, to measure what the sandbox costs.
const UNSANDBOXED: &str =
    "[profiles.bare]\nprovider = \"local\"\ncommand = [\"sh\", \"-c\", \"{prompt}\"]\nsandbox = \"off\"\n";

/// B1: 1,000 executions of `true` with a provider limit of 2, submitted as fast as
/// possible; executions per second until all are final, beside `xargs -P2 -n1 true`.
/// Run with the default sandbox (`shell`) and unsandboxed (`bare`), five rounds each,
/// alternating (one round's rate swings by 20 % on this VM); the medians are reported,
/// and the CPU the daemon and its children spent per execution, which swings less.
async fn b1_throughput(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let (mut sandboxed, mut unsandboxed) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        sandboxed.push(b1_rate("shell").await?);
        unsandboxed.push(b1_rate("bare").await?);
    }
    let median = |runs: &mut Vec<(f64, f64)>, pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (rate, cpu) = (median(&mut sandboxed, |r| r.0), median(&mut sandboxed, |r| r.1));
    let (bare_rate, bare_cpu) = (median(&mut unsandboxed, |r| r.0), median(&mut unsandboxed, |r| r.1));
    let floor_rate = xargs_floor(1000)?;
    figures.push(("b1_executions_per_s".into(), format!("{rate:.0}")));
    figures.push(("b1_unsandboxed_per_s".into(), format!("{bare_rate:.0}")));
    figures.push(("b1_sandbox_cost_pct".into(), format!("{:.1}", (1.0 - rate / bare_rate) * 100.0)));
    figures.push(("b1_cpu_us_per_execution".into(), format!("{cpu:.0}")));
    figures.push(("b1_unsandboxed_cpu_us_per_execution".into(), format!("{bare_cpu:.0}")));
    figures.push(("b1_xargs_floor_per_s".into(), format!("{floor_rate:.0}")));
    figures.push(("b1_ratio_to_floor".into(), format!("{:.2}", rate / floor_rate)));
    Ok(())
}

/// `seq n | xargs -P2 -n1 true`: processes per second.
fn xargs_floor(n: usize) -> anyhow::Result<f64> {
    let floor_started = Instant::now();
    let status =
        Command::new("sh").args(["-c", &format!("seq {n} | xargs -P2 -n1 true")]).status().context("running xargs")?;
    if !status.success() {
        bail!("xargs failed");
    }
    Ok(n as f64 / floor_started.elapsed().as_secs_f64())
}

/// B1's executions per second with one profile, and the CPU (µs) the daemon and its
/// children spent per execution.
async fn b1_rate(profile: &str) -> anyhow::Result<(f64, f64)> {
    const N: usize = 1000;
    let daemon = start_daemon(&format!("[providers.local]\nmax_concurrent = 2\n{UNSANDBOXED}")).await?;
    let client = &daemon.client;
    let pid = daemon.child.id().to_string();
    let cpu_before = cpu_seconds_with_children(&pid);
    let started = Instant::now();
    let bodies: Vec<Value> = (0..N).map(|_| json!({"prompt": "true", "profile": profile, "cwd": "/tmp"})).collect();
    // Submit from 8 concurrent request loops.
    let chunks: Vec<Vec<Value>> = bodies.chunks(N / 8).map(|c| c.to_vec()).collect();
    let submitters = chunks.into_iter().map(|chunk| {
        let client = client.clone();
        async move {
            for body in chunk {
                let _: Value = client.post("/api/v1/executions", &body).await?;
            }
            anyhow::Ok(())
        }
    });
    for result in futures_util::future::join_all(submitters).await {
        result?;
    }
    wait_idle(client, Duration::from_secs(300)).await?;
    let warden_rate = N as f64 / started.elapsed().as_secs_f64();
    let cpu_us = (cpu_seconds_with_children(&pid) - cpu_before) * 1e6 / N as f64;
    let failed: Value = client.get("/api/v1/executions?status=failed,cancelled,interrupted&limit=1").await?;
    if !failed["items"].as_array().is_some_and(|a| a.is_empty()) {
        bail!("B1: some executions did not succeed: {failed}");
    }
    Ok((warden_rate, cpu_us))
}

/// B2: an idle daemon, 200 single executions one after another: POST → process start
/// (the process prints its own start time) and POST → final state visible; with the
/// default sandbox, then unsandboxed.
async fn b2_latency(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    b2_run(figures, "b2", "protect-data").await?;
    b2_run(figures, "b2_unsandboxed", "off").await
}

async fn b2_run(figures: &mut Vec<(String, String)>, name: &str, sandbox: &str) -> anyhow::Result<()> {
    const N: usize = 200;
    let config =
        format!("[profiles.clock]\nprovider = \"local\"\ncommand = [\"date\", \"+%s%N\"]\nsandbox = \"{sandbox}\"\n");
    let daemon = start_daemon(&config).await?;
    let client = &daemon.client;
    let mut to_start = Vec::with_capacity(N);
    let mut to_final = Vec::with_capacity(N);
    for _ in 0..N {
        let sent_ns = unix_nanos();
        let sent = Instant::now();
        let created: Value =
            client.post("/api/v1/executions", &json!({"prompt": "", "profile": "clock", "cwd": "/tmp"})).await?;
        let id = created["id"].clone();
        loop {
            let execution: Value = client.get(&format!("/api/v1/executions/{id}")).await?;
            if execution["status"] == "succeeded" {
                to_final.push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if execution["status"].as_str().is_some_and(|s| s != "queued" && s != "running") {
                bail!("B2: execution ended {execution}");
            }
        }
        let output: Value = client.get(&format!("/api/v1/executions/{id}/output")).await?;
        let started_ns: u128 = output["items"][0]["text"].as_str().unwrap_or("0").parse()?;
        to_start.push(started_ns.saturating_sub(sent_ns) as f64 / 1e6);
    }
    to_start.sort_by(f64::total_cmp);
    to_final.sort_by(f64::total_cmp);
    figures.push((format!("{name}_post_to_start_p50_ms"), format!("{:.2}", percentile(&to_start, 50.0))));
    figures.push((format!("{name}_post_to_start_p99_ms"), format!("{:.2}", percentile(&to_start, 99.0))));
    figures.push((format!("{name}_post_to_final_visible_p50_ms"), format!("{:.2}", percentile(&to_final, 50.0))));
    Ok(())
}

/// B11: starting an isolated execution in a repository of 10,000 files (100 directories
/// of 100): POST → process start, with `base: "HEAD"` and with the default base (the
/// work tree, here with an uncommitted edit and an untracked file), beside `git worktree
/// add -b` of the same repository alone. Rounds alternate; medians. Each worktree is
/// removed before the next round (`discard`, or `git worktree remove`). The repository
/// and worktrees are on tmpfs when `/dev/shm` exists.
async fn b11_isolated_start(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    const ROUNDS: usize = 15;
    // On tmpfs where there is one: this machine's disk discards on delete, which makes a
    // checkout after a removal take 0.2 to 8 s at random, for git alone as for warden.
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() { tempfile::tempdir_in(shm)? } else { tempfile::tempdir()? };
    let repo = scratch.path().join("repo");
    for d in 0..100 {
        let dir = repo.join(format!("dir{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..100 {
            std::fs::write(dir.join(format!("file{f:03}.txt")), format!("file {d}/{f}\nsome text to check out\n"))?;
        }
    }
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("git")
            .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
            .args(args)
            .current_dir(&repo)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "git {args:?} failed");
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "10,000 files"])?;
    std::fs::write(repo.join("dir000/file000.txt"), "an uncommitted edit\n")?;
    std::fs::write(repo.join("untracked.txt"), "untracked\n")?;
    git(&["status", "--porcelain"])?; // the index's stat data is fresh, as in daily use

    let worktrees = scratch.path().join("worktrees");
    let config = format!(
        "[profiles.clock]\nprovider = \"local\"\ncommand = [\"date\", \"+%s%N\"]\nisolation = \"worktree\"\n\
         [providers.local]\nmax_concurrent = 1\n[worktrees]\ndir = {:?}\n",
        worktrees.display().to_string()
    );
    let daemon = start_daemon(&config).await?;
    let client = &daemon.client;
    let isolated = |base: Option<&str>| {
        let mut body = json!({"prompt": "", "profile": "clock", "cwd": repo});
        if let Some(base) = base {
            body["base"] = base.into();
        }
        body
    };
    let (mut git_add, mut from_head, mut from_work_tree) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let path = worktrees.join(format!("git-{round}"));
        let started = Instant::now();
        git(&["worktree", "add", "-q", "-b", &format!("bench-{round}"), path.to_str().unwrap_or_default()])?;
        git_add.push(started.elapsed().as_secs_f64() * 1000.0);
        git(&["worktree", "remove", "--force", path.to_str().unwrap_or_default()])?;
        for (base, into) in [(Some("HEAD"), &mut from_head), (None, &mut from_work_tree)] {
            let sent_ns = unix_nanos();
            let created: Value = client.post("/api/v1/executions", &isolated(base)).await?;
            let id = created["id"].clone();
            let ended = loop {
                let execution: Value = client.get(&format!("/api/v1/executions/{id}")).await?;
                match execution["status"].as_str() {
                    Some("succeeded") if !execution["changes"]["end_tree"].is_null() => break execution,
                    Some("queued" | "running" | "succeeded") => tokio::time::sleep(Duration::from_millis(2)).await,
                    _ => bail!("B11: execution ended {execution}"),
                }
            };
            let output: Value = client.get(&format!("/api/v1/executions/{id}/output")).await?;
            let started_ns: u128 = output["items"][0]["text"].as_str().unwrap_or("0").parse()?;
            into.push(started_ns.saturating_sub(sent_ns) as f64 / 1e6);
            let _: Value = client.post(&format!("/api/v1/executions/{id}/discard"), &json!({})).await?;
            anyhow::ensure!(ended["isolation"] == "worktree", "B11: not isolated: {ended}");
        }
    }
    for times in [&mut git_add, &mut from_head, &mut from_work_tree] {
        times.sort_by(f64::total_cmp);
    }
    let git_p50 = percentile(&git_add, 50.0);
    let (head_p50, work_tree_p50) = (percentile(&from_head, 50.0), percentile(&from_work_tree, 50.0));
    figures.push(("b11_git_worktree_add_p50_ms".into(), format!("{git_p50:.1}")));
    figures.push(("b11_isolated_start_base_head_p50_ms".into(), format!("{head_p50:.1}")));
    figures.push(("b11_isolated_start_base_work_tree_p50_ms".into(), format!("{work_tree_p50:.1}")));
    figures.push(("b11_base_head_vs_git".into(), format!("{:.2}x", head_p50 / git_p50)));
    figures.push(("b11_base_work_tree_vs_git".into(), format!("{:.2}x", work_tree_p50 / git_p50)));
    Ok(())
}

/// B10: what one agent token gets: an execution hands its token out (as any agent
/// could), and the bench asks for that execution with it, as fast as it can, for 3 s.
/// Reports the answers before the first 429 and the answered requests per second.
async fn b10_agent_rate(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let daemon = start_daemon("").await?;
    let client = &daemon.client;
    let agent: Value =
        client.post("/api/v1/executions", &json!({"prompt": "echo $WARDEN_TOKEN; sleep 30", "cwd": "/tmp"})).await?;
    let id = agent["id"].clone();
    let token = loop {
        let page: Value = client.get(&format!("/api/v1/executions/{id}/output")).await?;
        if let Some(token) = page["items"][0]["text"].as_str() {
            break token.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let as_agent = Client::new(client.base_url(), token);
    let (mut answered, mut refused, mut before_first_refusal) = (0u64, 0u64, None);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        match as_agent.get::<Value>(&format!("/api/v1/executions/{id}")).await {
            Ok(_) => answered += 1,
            Err(e) if e.code() == Some("rate_limited") => {
                refused += 1;
                before_first_refusal.get_or_insert(answered);
            }
            Err(e) => bail!("B10: {e}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _: Value = client.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).await?;
    figures.push(("b10_agent_answers_before_429".into(), before_first_refusal.unwrap_or(answered).to_string()));
    figures.push(("b10_agent_answered_per_s".into(), format!("{:.1}", answered as f64 / seconds)));
    figures.push(("b10_agent_refused_per_s".into(), format!("{:.0}", refused as f64 / seconds)));
    Ok(())
}

/// Resident memory of a process, in MB.
fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU time (user + system) a process has used so far, in seconds ("self" for the
/// bench).
fn cpu_seconds(pid: &str) -> f64 {
    cpu_ticks(pid, 2)
}

/// CPU seconds of a process and of the children it has reaped.
fn cpu_seconds_with_children(pid: &str) -> f64 {
    cpu_ticks(pid, 4)
}

/// The first `fields` of utime, stime, cutime, cstime (fields 14 to 17 of
/// /proc/PID/stat; 0-based 11 on after the name), summed, in seconds.
fn cpu_ticks(pid: &str, fields: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = after_name.iter().skip(11).take(fields).filter_map(|t| t.parse::<f64>().ok()).sum();
    // SAFETY: sysconf only reads a configuration value.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client subscribed to `subscription`, past its hello.
async fn ws_client(client: &Client, token: &str, subscription: Value) -> anyhow::Result<Ws> {
    use futures_util::{SinkExt, StreamExt};
    let url = format!("{}/api/v1/ws?token={token}", client.base_url().replace("http://", "ws://"));
    // tungstenite zeroes its whole read buffer (128 KiB by default) before each read: in
    // B5 that was a quarter of the client's time, 500 sockets each reading a frame or two
    // at a time. Frames are a few hundred bytes; B3's followers, reading a backlog, make
    // more reads of 4 KiB and were as fast.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4 * 1024);
    // Nagle off, as a real client sending small messages would have it.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    ws.next().await.context("no hello")??;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(subscription.to_string().into())).await?;
    Ok(ws)
}

/// What the harness reads of a WebSocket frame: only what it needs, borrowed, so that
/// the client (which shares the two cores with the daemon) spends little on parsing.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    event: Option<LightEvent<'a>>,
    // A `skipped` notice's fields, read directly: `#[serde(flatten)]` would buffer every
    // frame's fields first, which cost the client about half of its time in B5.
    #[serde(default)]
    count: u64,
    #[serde(default)]
    from_seq: u64,
    #[serde(default)]
    to_seq: u64,
}

/// A `skipped` notice's range.
#[derive(serde::Deserialize, Default)]
struct Skipped {
    #[serde(default)]
    from_seq: u64,
    #[serde(default)]
    to_seq: u64,
}

/// What the harness reads of an event envelope.
#[derive(serde::Deserialize)]
struct LightEvent<'a> {
    seq: u64,
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    execution_id: Option<i64>,
    #[serde(default, borrow)]
    data: LightData<'a>,
}

#[derive(serde::Deserialize, Default)]
struct LightData<'a> {
    #[serde(default)]
    n: Option<u64>,
    #[serde(default, borrow)]
    prompt: Option<std::borrow::Cow<'a, str>>,
}

/// One counter's value from the daemon's `/metrics` ("?" when it is not there).
async fn metric(client: &Client, name: &str) -> anyhow::Result<String> {
    let metrics = client.get_text("/metrics").await?;
    let value = metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
    Ok(value.unwrap_or("?").to_owned())
}

/// When the daemon read an output event's line: its envelope's `ts`, in Unix ns.
fn read_time(frame: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Stamped<'a> {
        #[serde(borrow)]
        event: Stamp<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Stamp<'a> {
        ts: &'a str,
    }
    let stamped: Stamped = serde_json::from_str(frame).ok()?;
    stamped.event.ts.parse::<chrono::DateTime<chrono::Utc>>().ok()?.timestamp_nanos_opt()
}

/// Fetches the output lines a `skipped` notice names from the history, reading only
/// each event's `seq` and `n`; returns them as `(seq, n)`.
async fn refetch(client: &Client, id: Option<i64>, from_seq: u64, to_seq: u64) -> anyhow::Result<SeqLines> {
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        items: Vec<LightEvent<'a>>,
        next_cursor: Option<&'a str>,
    }
    let narrow = id.map(|id| format!("&execution_id={id}")).unwrap_or_default();
    let mut lines = Vec::new();
    let mut after = from_seq.saturating_sub(1);
    loop {
        let limit = to_seq.saturating_sub(after).clamp(1, 10_000);
        let path = format!("/api/v1/events/history?topics=execution.output{narrow}&since={after}&limit={limit}");
        let body = client.get_text(&path).await?;
        let page: Page = serde_json::from_str(&body)?;
        let Some(last) = page.items.last().map(|e| e.seq) else { return Ok(lines) };
        lines.extend(page.items.iter().filter(|e| e.seq <= to_seq).map(|e| (e.seq, e.data.n.unwrap_or(0))));
        if last >= to_seq || page.next_cursor.is_none() {
            return Ok(lines);
        }
        after = last;
    }
}

/// Output lines as `(seq, n)`.
type SeqLines = Vec<(u64, u64)>;

/// Refetches skipped ranges beside a follower, as a client should: the follower keeps
/// reading its stream meanwhile (a client that stops reading to refetch falls further
/// behind and is skipped more). Send ranges; drop the sender and await the lines.
fn refetcher(
    client: Client,
    id: Option<i64>,
) -> (mpsc::UnboundedSender<Skipped>, JoinHandle<anyhow::Result<SeqLines>>) {
    let (ranges, mut todo) = mpsc::unbounded_channel::<Skipped>();
    let task = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(range) = todo.recv().await {
            lines.extend(refetch(&client, id, range.from_seq, range.to_seq).await?);
        }
        Ok(lines)
    });
    (ranges, task)
}

/// Follows one execution's output over a WebSocket until it finishes, refetching what a
/// `skipped` notice names; returns the line numbers in seq order.
async fn ws_follow(client: Client, mut ws: Ws, id: Value) -> anyhow::Result<Vec<u64>> {
    use futures_util::StreamExt;
    let id = id.as_i64();
    let (gaps, refetched) = refetcher(client, id);
    let mut lines: Vec<(u64, u64)> = Vec::new();
    while let Some(frame) = ws.next().await {
        let frame = frame?;
        let Ok(text) = frame.to_text() else { continue };
        let Ok(frame) = serde_json::from_str::<Frame>(text) else { continue };
        if frame.kind == "skipped" {
            let _ = gaps.send(Skipped { from_seq: frame.from_seq, to_seq: frame.to_seq });
            continue;
        }
        let Some(event) = frame.event else { continue };
        match event.kind {
            "execution.output" => lines.push((event.seq, event.data.n.unwrap_or(0))),
            "execution.finished" if event.execution_id == id => break,
            _ => {}
        }
    }
    drop(gaps);
    lines.extend(refetched.await??);
    lines.sort();
    Ok(lines.into_iter().map(|(_, n)| n).collect())
}

/// Follows one execution's SSE stream to its end, refetching skipped ranges.
async fn sse_follow(client: Client, id: Value) -> anyhow::Result<Vec<u64>> {
    let mut stream = client.sse(&format!("/api/v1/executions/{id}/stream"), None).await?;
    let id = id.as_i64();
    let (gaps, refetched) = refetcher(client, id);
    let mut lines: Vec<(u64, u64)> = Vec::new();
    while let Some(message) = stream.next().await? {
        match message.event.as_str() {
            "execution.output" => {
                let event: LightEvent = serde_json::from_str(&message.data)?;
                lines.push((event.seq, event.data.n.unwrap_or(0)));
            }
            "skipped" => {
                let _ = gaps.send(serde_json::from_str(&message.data)?);
            }
            "end" => break,
            _ => {}
        }
    }
    drop(gaps);
    lines.extend(refetched.await??);
    lines.sort();
    Ok(lines.into_iter().map(|(_, n)| n).collect())
}

fn all_in_order(lines: &[u64], n: u64) -> bool {
    lines.len() as u64 == n && lines.iter().enumerate().all(|(i, l)| *l == i as u64 + 1)
}

/// B3: one execution printing 1,000,000 lines, followed by an SSE and a WebSocket client.
async fn b3_output(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    const N: u64 = 1_000_000;
    let daemon = start_daemon("").await?;
    let client = daemon.client.clone();
    let dir = tempfile::tempdir()?;
    let gate = dir.path().join("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.01; done; seq 1 {N}", gate.display());
    let created: Value = client.post("/api/v1/executions", &json!({"prompt": script, "cwd": "/tmp"})).await?;
    let id = created["id"].clone();
    let token = std::fs::read_to_string(daemon._dir.path().join("home/token"))?.trim().to_owned();
    let ws =
        ws_client(&client, &token, json!({"type": "subscribe", "topics": ["execution.*"], "execution_id": id})).await?;
    let sse = tokio::spawn(sse_follow(client.clone(), id.clone()));
    let ws = tokio::spawn(ws_follow(client.clone(), ws, id.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await; // both attached before the burst
    let daemon_pid = daemon.child.id().to_string();
    let (daemon_cpu, bench_cpu) = (cpu_seconds(&daemon_pid), cpu_seconds("self"));
    let started = Instant::now();
    std::fs::write(&gate, "")?;
    loop {
        let execution: Value = client.get(&format!("/api/v1/executions/{id}")).await?;
        if execution["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let persisted = started.elapsed();
    let sse_lines = sse.await??;
    let sse_done = started.elapsed();
    let ws_lines = ws.await??;
    let ws_done = started.elapsed();
    let daemon_cpu = cpu_seconds(&daemon_pid) - daemon_cpu;
    let bench_cpu = cpu_seconds("self") - bench_cpu;
    let rss = rss_mb(daemon.child.id());
    let skipped = metric(&client, "warden_events_skipped_total").await?;
    figures.push(("b3_lines_persisted_per_s".into(), format!("{:.0}", N as f64 / persisted.as_secs_f64())));
    figures.push(("b3_lines_delivered_sse_per_s".into(), format!("{:.0}", N as f64 / sse_done.as_secs_f64())));
    figures.push(("b3_lines_delivered_ws_per_s".into(), format!("{:.0}", N as f64 / ws_done.as_secs_f64())));
    figures.push((
        "b3_all_lines_in_order".into(),
        (all_in_order(&sse_lines, N) && all_in_order(&ws_lines, N)).to_string(),
    ));
    figures.push(("b3_lines_skipped_live_then_refetched".into(), skipped));
    figures.push(("b3_daemon_rss_mb".into(), format!("{rss:.0}")));
    // CPU per line is steadier than the rates on a shared, noisy VM: both cores are busy.
    figures.push(("b3_daemon_cpu_us_per_line".into(), format!("{:.2}", daemon_cpu * 1e6 / N as f64)));
    figures.push(("b3_bench_client_cpu_us_per_line".into(), format!("{:.2}", bench_cpu * 1e6 / N as f64)));
    Ok(())
}

/// What else happens during a fan-out measurement (B9).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Disturbance {
    None,
    /// One more client subscribes to everything and never reads, while another
    /// execution prints 1,000,000 lines (the B3 flood).
    StalledClientDuringFlood,
    /// A retention pass prunes 1,000,000 stored output lines (B14).
    Prune,
}

/// B4/B5/B9: `clients` WebSocket clients subscribed to `*` while an execution prints a
/// timestamped line every millisecond for 5 s: print → receive latency, and daemon RSS.
async fn fan_out(
    figures: &mut Vec<(String, String)>,
    name: &str,
    clients: usize,
    disturbance: Disturbance,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    const LINES: u64 = 5000;
    let server = format!("[server]\nmax_clients = {}\n", clients + 10);
    let daemon = match disturbance {
        Disturbance::Prune => {
            let config = format!("{server}[retention]\nenabled = false\nkeep_last = 0\n");
            let dir = seed_executions(&config, "seq 1 1000", 10, 100, (60.0, 31.0)).await?;
            start_daemon_in(dir, &config).await?
        }
        _ => start_daemon(&server).await?,
    };
    let client = daemon.client.clone();
    let token = std::fs::read_to_string(daemon._dir.path().join("home/token"))?.trim().to_owned();
    // The timed execution prints its first line `lead` seconds after it starts.
    let lead = if disturbance == Disturbance::None { 0.2 } else { 1.0 };
    let script = format!(
        "import time\nt0 = time.time() + {lead}\nfor i in range({LINES}):\n    d = t0 + i / 1000 - time.time()\n    \
         if d > 0: time.sleep(d)\n    print(time.time_ns(), flush=True)\n"
    );
    let timed = json!({"prompt": "python3 -c \"$SCRIPT\"", "cwd": "/tmp", "env": {"SCRIPT": script}});
    let mut sockets = Vec::new();
    // Held, never read: its queue fills while the flood runs.
    let mut _stalled = None;
    let mut pruning = None;
    match disturbance {
        Disturbance::Prune => {
            for _ in 0..clients {
                sockets.push(ws_client(&client, &token, json!({"type": "subscribe", "topics": ["*"]})).await?);
            }
            let _: Value = client.post("/api/v1/executions", &timed).await?;
            // The pass starts once lines flow, and its window is kept to judge them by.
            let client = client.clone();
            pruning = Some(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs_f64(lead + 0.5)).await;
                let started = unix_nanos();
                let report: Value = client.post("/api/v1/prune", &json!({})).await?;
                anyhow::Ok((started, unix_nanos(), report))
            }));
        }
        Disturbance::None => {
            for _ in 0..clients {
                sockets.push(ws_client(&client, &token, json!({"type": "subscribe", "topics": ["*"]})).await?);
            }
            let _: Value = client.post("/api/v1/executions", &timed).await?;
        }
        Disturbance::StalledClientDuringFlood => {
            // The readers follow the timed execution; the stalled client takes everything.
            let timed: Value = client.post("/api/v1/executions", &timed).await?;
            let follow = json!({"type": "subscribe", "topics": ["execution.*"], "execution_id": timed["id"]});
            for _ in 0..clients {
                sockets.push(ws_client(&client, &token, follow.clone()).await?);
            }
            _stalled = Some(ws_client(&client, &token, json!({"type": "subscribe", "topics": ["*"]})).await?);
            let _: Value = client.post("/api/v1/executions", &json!({"prompt": FLOOD, "cwd": "/tmp"})).await?;
        }
    }
    let readers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            // One reader also splits off the time to the daemon's read (parsing every
            // event's `ts` in 500 readers would load the bench client itself).
            let split = i == 0;
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut capture_lags = Vec::new();
                let mut skipped = 0u64;
                while let Some(Ok(frame)) = ws.next().await {
                    let now = unix_nanos();
                    let Ok(text) = frame.to_text() else { continue };
                    if let Some(sent) = printed_time(text) {
                        latencies.push((sent, now.saturating_sub(sent) as f64 / 1e6));
                        if let Some(read) = split.then(|| read_time(text)).flatten() {
                            capture_lags.push((read as u128).saturating_sub(sent) as f64 / 1e6);
                        }
                        continue;
                    }
                    let Ok(frame) = serde_json::from_str::<Frame>(text) else { continue };
                    if frame.kind == "skipped" {
                        skipped += frame.count;
                        continue;
                    }
                    let Some(event) = frame.event else { continue };
                    if event.kind == "execution.finished" && event.data.prompt.as_deref() != Some(FLOOD) {
                        break;
                    }
                }
                (latencies, capture_lags, skipped)
            })
        })
        .collect();
    let pid = daemon.child.id();
    let sampler = tokio::spawn(async move {
        let mut peak: f64 = 0.0;
        for _ in 0..200 {
            peak = peak.max(rss_mb(pid));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    let mut timed_latencies = Vec::new();
    let mut lags = Vec::new();
    let mut skipped = 0;
    for reader in readers {
        let (latencies, capture_lags, s) = reader.await?;
        timed_latencies.extend(latencies);
        lags.extend(capture_lags);
        skipped += s;
    }
    let mut all: Vec<f64> = timed_latencies.iter().map(|(_, latency)| *latency).collect();
    lags.sort_by(f64::total_cmp);
    let sampler_peak = sampler.await.unwrap_or(f64::NAN);
    let rss = rss_mb(pid);
    all.sort_by(f64::total_cmp);
    figures.push((format!("{name}_clients"), clients.to_string()));
    figures.push((format!("{name}_latency_p50_ms"), format!("{:.2}", percentile(&all, 50.0))));
    figures.push((format!("{name}_latency_p99_ms"), format!("{:.2}", percentile(&all, 99.0))));
    // How much of it passed before the daemon read the line from the pipe.
    figures.push((format!("{name}_print_to_read_p50_ms"), format!("{:.2}", percentile(&lags, 50.0))));
    figures.push((format!("{name}_print_to_read_p99_ms"), format!("{:.2}", percentile(&lags, 99.0))));
    figures.push((format!("{name}_events_received"), all.len().to_string()));
    figures.push((format!("{name}_events_skipped"), skipped.to_string()));
    figures.push((format!("{name}_daemon_rss_mb"), format!("{rss:.0}")));
    let peak = sampler_peak;
    figures.push((format!("{name}_daemon_peak_rss_mb"), format!("{peak:.0}")));
    if let Some(pruning) = pruning {
        let (from, to, report) = pruning.await??;
        let mut during: Vec<f64> =
            timed_latencies.iter().filter(|(sent, _)| (from..=to).contains(sent)).map(|(_, l)| *l).collect();
        during.sort_by(f64::total_cmp);
        figures.push((format!("{name}_pruned_output_lines"), report["output_lines"].to_string()));
        figures.push((format!("{name}_prune_ms"), report["took_ms"].to_string()));
        figures.push((format!("{name}_lines_received_during_prune"), during.len().to_string()));
        figures.push((format!("{name}_latency_p50_during_prune_ms"), format!("{:.2}", percentile(&during, 50.0))));
        figures.push((format!("{name}_latency_p99_during_prune_ms"), format!("{:.2}", percentile(&during, 99.0))));
    }
    if disturbance == Disturbance::StalledClientDuringFlood {
        let dropped = metric(&client, "warden_clients_dropped_total").await?;
        figures.push((format!("{name}_stalled_clients_dropped"), dropped));
    }
    Ok(())
}

/// The time printed by the timed execution, from one of its output frames, in Unix ns.
/// The frame is scanned from its end, not parsed: 500 readers parsing 500,000 frames/s
/// with serde kept one of the two cores busy (B5), the daemon's figure then measured the
/// client (and substring searches, each setting up a searcher, still took a tenth of
/// it). An output event's data ends with its `stream` and `text`, and the printed time
/// is plain digits: `…,"stream":"stdout","text":"<digits>"}}}`.
fn printed_time(frame: &str) -> Option<u128> {
    let body = frame.strip_prefix(r#"{"type":"event""#)?.strip_suffix(r#""}}}"#)?;
    let digits_from = body.rfind(|c: char| !c.is_ascii_digit())? + 1;
    let (head, digits) = body.split_at(digits_from);
    if !head.ends_with(r#","stream":"stdout","text":""#) {
        return None;
    }
    digits.parse().ok()
}

/// The flood's prompt, told apart from the timed execution's end.
const FLOOD: &str = "sleep 0.2; seq 1 1000000";

/// B6: 1,000 approvals, 10 deciders racing on each, first over HTTP (each decider keeps
/// `HTTP_IN_FLIGHT` requests open) and then, on fresh approvals, over WebSocket (each
/// decider sends every decision without waiting and reads the answers): decisions per
/// second and exactly one winner each; then decision POST → waiting long poll's answer.
async fn b6_approvals(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let daemon = start_daemon("").await?;
    let client = daemon.client.clone();
    let token = std::fs::read_to_string(daemon._dir.path().join("home/token"))?.trim().to_owned();

    let ids = open_approvals(&client, "http").await?;
    let started = Instant::now();
    let deciders = (0..B6_DECIDERS).map(|d| tokio::spawn(http_decider(client.clone(), d, ids.clone())));
    let wins = collect_wins(deciders).await?;
    record_races(figures, "b6_http", &wins, started.elapsed());

    let ids = open_approvals(&client, "ws").await?;
    let mut sockets = Vec::new();
    for _ in 0..B6_DECIDERS {
        sockets.push(ws_client(&client, &token, json!({"type": "subscribe", "topics": ["bench.nothing"]})).await?);
    }
    let started = Instant::now();
    let deciders = sockets.into_iter().enumerate().map(|(d, ws)| tokio::spawn(ws_decider(ws, d, ids.clone())));
    let wins = collect_wins(deciders).await?;
    record_races(figures, "b6_ws", &wins, started.elapsed());

    let mut latencies = Vec::new();
    for i in 0..100 {
        let approval: Value = client.post("/api/v1/approvals", &json!({"title": format!("poll {i}")})).await?;
        let id = approval["id"].clone();
        let poller = client.clone();
        let poll = tokio::spawn(async move {
            let answer: Result<Value, _> = poller.get(&format!("/api/v1/approvals/{id}?wait=30")).await;
            (Instant::now(), answer)
        });
        tokio::time::sleep(Duration::from_millis(20)).await; // the poll is waiting
        let sent = Instant::now();
        let _: Value =
            client.post(&format!("/api/v1/approvals/{}", approval["id"]), &json!({"decision": "approve"})).await?;
        let (answered, _) = poll.await?;
        latencies.push(answered.saturating_duration_since(sent).as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    figures.push(("b6_decision_to_long_poll_p50_ms".into(), format!("{:.2}", percentile(&latencies, 50.0))));
    figures.push(("b6_decision_to_long_poll_p99_ms".into(), format!("{:.2}", percentile(&latencies, 99.0))));
    Ok(())
}

const B6_APPROVALS: usize = 1000;
const B6_DECIDERS: usize = 10;
const HTTP_IN_FLIGHT: usize = 16;

async fn open_approvals(client: &Client, label: &str) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(B6_APPROVALS);
    for i in 0..B6_APPROVALS {
        let approval: Value = client.post("/api/v1/approvals", &json!({"title": format!("{label} {i}")})).await?;
        ids.push(approval["id"].as_i64().context("an approval without an id")?);
    }
    Ok(ids)
}

fn decision_of(decider: usize) -> &'static str {
    if decider.is_multiple_of(2) {
        "approve"
    } else {
        "deny"
    }
}

/// Answers every approval over HTTP; returns the ones this decider won.
async fn http_decider(client: Client, d: usize, ids: Vec<i64>) -> anyhow::Result<Vec<i64>> {
    use futures_util::StreamExt;
    let client = client.named(format!("decider-{d}"));
    let answers = futures_util::stream::iter(ids)
        .map(|id| {
            let client = client.clone();
            async move {
                let path = format!("/api/v1/approvals/{id}");
                match client.post::<Value>(&path, &json!({"decision": decision_of(d)})).await {
                    Ok(_) => Ok(Some(id)),
                    Err(e) if e.code() == Some("already_decided") => Ok(None),
                    Err(e) => Err(anyhow::anyhow!("decide {id}: {e}")),
                }
            }
        })
        .buffer_unordered(HTTP_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    answers.into_iter().filter_map(Result::transpose).collect()
}

/// Sends a decision for every approval over one WebSocket, then reads every answer;
/// returns the ones this decider won.
async fn ws_decider(ws: Ws, d: usize, ids: Vec<i64>) -> anyhow::Result<Vec<i64>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        #[serde(default)]
        approval_id: i64,
        #[serde(default)]
        won: bool,
    }
    let (mut sink, mut stream) = ws.split();
    let expected = ids.len();
    let sender = tokio::spawn(async move {
        for id in ids {
            let decide = json!({"type": "decide", "approval_id": id, "decision": decision_of(d)});
            sink.send(Message::Text(decide.to_string().into())).await?;
        }
        anyhow::Ok(())
    });
    let mut wins = Vec::new();
    let mut answered = 0;
    while answered < expected {
        let frame = stream.next().await.context("the WebSocket closed before every answer")??;
        let Ok(text) = frame.to_text() else { continue };
        let answer: Answer = serde_json::from_str(text)?;
        match answer.kind {
            "decision" => {
                answered += 1;
                if answer.won {
                    wins.push(answer.approval_id);
                }
            }
            "error" => bail!("a decision failed: {text}"),
            _ => {}
        }
    }
    sender.await??;
    Ok(wins)
}

async fn collect_wins(
    deciders: impl Iterator<Item = tokio::task::JoinHandle<anyhow::Result<Vec<i64>>>>,
) -> anyhow::Result<Vec<i64>> {
    let mut wins = Vec::new();
    for decider in deciders {
        wins.extend(decider.await??);
    }
    Ok(wins)
}

fn record_races(figures: &mut Vec<(String, String)>, name: &str, wins: &[i64], elapsed: Duration) {
    let mut wins = wins.to_vec();
    wins.sort();
    let double_wins = wins.windows(2).filter(|w| w[0] == w[1]).count();
    let unique = wins.len() - double_wins;
    let rate = B6_APPROVALS as f64 / elapsed.as_secs_f64();
    figures.push((format!("{name}_decisions_per_s"), format!("{rate:.0}")));
    figures.push((format!("{name}_approvals_with_one_winner"), format!("{unique}/{B6_APPROVALS}")));
    figures.push((format!("{name}_double_wins"), double_wins.to_string()));
}

/// Submits `n` executions of `true` from 8 concurrent loops and waits until all are final.
async fn run_trues(client: &Client, n: usize) -> anyhow::Result<()> {
    let loops = (0..8).map(|i| {
        let client = client.clone();
        let count = n / 8 + usize::from(i < n % 8);
        async move {
            for _ in 0..count {
                let _: Value = client.post("/api/v1/executions", &json!({"prompt": "true", "cwd": "/tmp"})).await?;
            }
            anyhow::Ok(())
        }
    });
    for result in futures_util::future::join_all(loops).await {
        result?;
    }
    wait_idle(client, Duration::from_secs(600)).await
}

/// Requests per second of `GET path` from 10 keep-alive loops for `seconds`.
async fn request_rate(client: &Client, path: &str, seconds: u64) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let url = format!("{}{path}", client.base_url());
    let loops = (0..10).map(|_| {
        let (http, url, token) = (reqwest::Client::new(), url.clone(), client.token().to_owned());
        async move {
            let mut count = 0u64;
            while Instant::now() < deadline {
                // The body is read whole but not parsed: the harness measures the daemon.
                let response = http.get(&url).bearer_auth(&token).send().await?.error_for_status()?;
                response.bytes().await?;
                count += 1;
            }
            anyhow::Ok(count)
        }
    });
    let mut total = 0;
    for result in futures_util::future::join_all(loops).await {
        total += result?;
    }
    Ok(total as f64 / seconds as f64)
}

/// B7: `GET /api/v1/executions?limit=50` with 10,000 executions stored, beside
/// `GET /health` as the ceiling of the same harness.
async fn b7_list(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let daemon = start_daemon("[providers.local]\nmax_concurrent = 0\n").await?;
    let client = daemon.client.clone();
    run_trues(&client, 10_000).await?;
    let list = request_rate(&client, "/api/v1/executions?limit=50", 5).await?;
    let health = request_rate(&client, "/health", 5).await?;
    figures.push(("b7_list_requests_per_s".into(), format!("{list:.0}")));
    figures.push(("b7_health_requests_per_s".into(), format!("{health:.0}")));
    figures.push(("b7_ratio_to_health".into(), format!("{:.2}", list / health)));
    Ok(())
}

/// A home holding `real × copies` final executions of `prompt`: `real` run by a daemon,
/// then stopped, its rows copied (output, events and all, with ids and seqs of their
/// own) until there are `copies` of each, ended between `ages` (oldest, newest) days
/// ago, oldest first, as months of use would leave them.
async fn seed_executions(
    config: &str,
    prompt: &str,
    real: usize,
    copies: i64,
    (oldest_days, newest_days): (f64, f64),
) -> anyhow::Result<tempfile::TempDir> {
    let daemon = start_daemon(config).await?;
    let local = json!({"max_concurrent": 0, "rate_per_minute": 0});
    let _: Value = daemon.client.put("/api/v1/providers/local", &local).await?;
    for _ in 0..real {
        let _: Value = daemon.client.post("/api/v1/executions", &json!({"prompt": prompt, "cwd": "/tmp"})).await?;
    }
    wait_idle(&daemon.client, Duration::from_secs(120)).await?;
    let db = daemon.home().db_path();
    let dir = daemon.stop()?;
    let conn = rusqlite::Connection::open(&db)?;
    let columns = |table: &str| -> anyhow::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let names = stmt.query_map([], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(names)
    };
    let copy = |table: &str, shifted: &[(&str, &str)]| -> anyhow::Result<String> {
        let names = columns(table)?;
        let picked: Vec<String> = names
            .iter()
            .map(|c| shifted.iter().find(|(name, _)| name == c).map_or(c.clone(), |(_, expr)| (*expr).to_owned()))
            .collect();
        Ok(format!("INSERT INTO {table} ({}) SELECT {} FROM {table} WHERE ", names.join(", "), picked.join(", ")))
    };
    let (ids, seqs): (i64, i64) = conn.query_row(
        "SELECT (SELECT max(id) FROM executions), (SELECT max(max(coalesce(first_seq + lines, 0)), (SELECT max(seq) FROM events)) FROM output_chunks)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let executions = copy("executions", &[("id", "id + ?1"), ("json", "json_set(json, '$.id', id + ?1)")])?;
    let chunks = copy("output_chunks", &[("execution_id", "execution_id + ?1"), ("first_seq", "first_seq + ?2")])?;
    let events =
        copy("events", &[("seq", "seq + ?2"), ("execution_id", "execution_id + ?1"), ("approval_id", "NULL")])?;
    conn.execute_batch("BEGIN")?;
    for k in 1..copies {
        let (id_shift, seq_shift) = (k * ids, k * seqs);
        conn.execute(&format!("{executions} id <= ?3"), rusqlite::params![id_shift, seq_shift, ids])?;
        conn.execute(&format!("{chunks} execution_id <= ?3"), rusqlite::params![id_shift, seq_shift, ids])?;
        conn.execute(
            &format!("{events} execution_id <= ?3 AND execution_id IS NOT NULL"),
            rusqlite::params![id_shift, seq_shift, ids],
        )?;
    }
    // Spread their ends between the ages, the newest last.
    let total = ids * copies;
    let now = chrono::Utc::now();
    let mut stmt = conn.prepare("UPDATE executions SET finished_at = ?2 WHERE id = ?1")?;
    for id in 1..=total {
        let days = newest_days + (total - id) as f64 / total as f64 * (oldest_days - newest_days);
        let age = chrono::Duration::milliseconds((days * 86_400_000.0) as i64);
        stmt.execute(rusqlite::params![id, (now - age).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)])?;
    }
    drop(stmt);
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(dir)
}

/// Median latency of `GET path`, one request after another, `n` times.
async fn request_p50_ms(client: &Client, path: &str, n: usize) -> anyhow::Result<f64> {
    let (http, url, token) =
        (reqwest::Client::new(), format!("{}{path}", client.base_url()), client.token().to_owned());
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        http.get(&url).bearer_auth(&token).send().await?.error_for_status()?.bytes().await?;
        took.push(started.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    Ok(percentile(&took, 50.0))
}

/// B13: 100,000 executions of 20 output lines each, ended over the last 100 days: the
/// database's size and `GET /executions?limit=50` p50 with retention off, and after a
/// pass with the defaults (30 days, the newest 100 kept). (B14, B4 while a pass prunes
/// 1,000,000 stored output lines, is a `fan_out`.)
async fn b13_retention(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    const CONFIG: &str = "[retention]\nenabled = false\n";
    let dir = seed_executions(CONFIG, "seq 1 20", 1000, 100, (100.0, 0.0)).await?;
    let db = Home::new(dir.path().join("home")).db_path();
    let daemon = start_daemon_in(dir, CONFIG).await?;
    let size_off = std::fs::metadata(&db)?.len();
    let list_off = request_p50_ms(&daemon.client, "/api/v1/executions?limit=50", 500).await?;
    let report: Value = daemon.client.post("/api/v1/prune", &json!({})).await?;
    let size_on = std::fs::metadata(&db)?.len();
    let list_on = request_p50_ms(&daemon.client, "/api/v1/executions?limit=50", 500).await?;
    figures.push(("b13_executions".into(), "100000".into()));
    figures.push(("b13_db_mb_retention_off".into(), format!("{:.1}", size_off as f64 / 1e6)));
    figures.push(("b13_db_mb_retention_on".into(), format!("{:.1}", size_on as f64 / 1e6)));
    figures.push(("b13_list_p50_ms_retention_off".into(), format!("{list_off:.2}")));
    figures.push(("b13_list_p50_ms_retention_on".into(), format!("{list_on:.2}")));
    figures.push(("b13_pruned_executions".into(), report["executions"].to_string()));
    figures.push(("b13_prune_ms".into(), report["took_ms"].to_string()));
    Ok(())
}

/// B8: daemon RSS idle, then after each of ten rounds of the B1 workload.
async fn b8_memory(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let daemon = start_daemon("[providers.local]\nmax_concurrent = 2\n").await?;
    let pid = daemon.child.id();
    figures.push(("b8_idle_rss_mb".into(), format!("{:.1}", rss_mb(pid))));
    let mut rounds = Vec::new();
    for _ in 0..10 {
        run_trues(&daemon.client, 1000).await?;
        rounds.push(rss_mb(pid));
    }
    let (first, last) = (rounds[0], rounds[rounds.len() - 1]);
    figures.push(("b8_rss_after_round_1_mb".into(), format!("{first:.1}")));
    figures.push(("b8_rss_after_round_10_mb".into(), format!("{last:.1}")));
    figures.push(("b8_growth_after_round_1_pct".into(), format!("{:.1}", (last - first) / first * 100.0)));
    // Every round's, to tell a warm-up that levels off from a leak that keeps growing.
    let each: Vec<String> = rounds.iter().map(|mb| format!("{mb:.1}")).collect();
    figures.push(("b8_rss_by_round_mb".into(), each.join(" ")));
    Ok(())
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn write_results(path: &Path, figures: &[(String, String)]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = ("<!-- results:begin -->", "<!-- results:end -->");
    let mut table = format!("{begin}\n| figure | value |\n|---|---|\n");
    for (name, value) in figures {
        table.push_str(&format!("| {name} | {value} |\n"));
    }
    table.push_str(end);
    let updated = match (text.find(begin), text.find(end)) {
        (Some(a), Some(b)) => format!("{}{}{}", &text[..a], table, &text[b + end.len()..]),
        _ => format!("{text}\n{table}\n"),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

/// A Claude Code stream-json run of `lines` lines, made from a real capture: its init
/// line, then model turns (a tool call, its result, a message) with ids of their own,
/// then its result line.
fn claude_stream(lines: usize) -> String {
    let capture = include_str!("../src/agent/testdata/claude-tool-call.jsonl");
    let captured: Vec<&str> = capture.lines().collect();
    let (init, turn, result) = (captured[0], &captured[1..4], captured[4]);
    let mut out = String::with_capacity(lines * 700);
    out.push_str(init);
    out.push('\n');
    for i in 0..lines.saturating_sub(2) {
        let line = turn[i % 3].replace("msg_2", &format!("msg_a{i}")).replace("msg_4", &format!("msg_b{i}"));
        out.push_str(&line.replace("toolu_01", &format!("toolu_{}", i / 3)));
        out.push('\n');
    }
    out.push_str(result);
    out.push('\n');
    out
}

/// B12: how fast agent output is read into agent events (the normaliser alone, in
/// 256-line chunks as capture hands them over), and a 100,000-line Claude stream
/// through a `claude-stream-json` execution end to end.
async fn b12_agent_stream(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    const LINES: usize = 100_000;
    let stream = claude_stream(LINES);
    let lines: Vec<&str> = stream.lines().collect();
    let chunks: Vec<String> = lines.chunks(256).map(|c| c.join("\n")).collect();
    let mut rates = Vec::new();
    let mut events = 0;
    for _ in 0..5 {
        let mut reader =
            warden::agent::AgentReader::new(warden::domain::AgentFormat::ClaudeStreamJson, None).context("a reader")?;
        let started = Instant::now();
        events = chunks.iter().map(|chunk| reader.read_lines(chunk).events.len()).sum::<usize>();
        rates.push(LINES as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    figures.push(("b12 normaliser lines/s (median of 5)".into(), format!("{:.0}", rates[2])));
    figures.push(("b12 normaliser MB/s".into(), format!("{:.0}", rates[2] * stream.len() as f64 / LINES as f64 / 1e6)));
    figures.push(("b12 agent events from 100,000 lines".into(), events.to_string()));

    let daemon = start_daemon(
        "[profiles.replay]\nprovider = \"local\"\nformat = \"claude-stream-json\"\ncommand = [\"cat\", \"{prompt}\"]\n",
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stream.jsonl");
    std::fs::write(&file, &stream)?;
    let started = Instant::now();
    let created: Value = daemon
        .client
        .post("/api/v1/executions", &json!({"prompt": file, "profile": "replay", "cwd": dir.path()}))
        .await?;
    let id = created["id"].clone();
    let finished = loop {
        let execution: Value = daemon.client.get(&format!("/api/v1/executions/{id}")).await?;
        if execution["status"].as_str().is_some_and(|s| s != "queued" && s != "running") {
            break execution;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    if finished["status"] != "succeeded" || finished["agent"]["result"].is_null() {
        bail!("the agent stream did not end well: {finished}");
    }
    figures.push(("b12 agent stream end to end, lines/s persisted".into(), format!("{:.0}", LINES as f64 / elapsed)));
    figures.push(("b12 agent stream tool calls counted".into(), finished["agent"]["tool_calls"].to_string()));
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let write = args.iter().any(|a| a == "--write");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o.as_str() == name);
    let mut figures = Vec::new();
    if wanted("b1") {
        b1_throughput(&mut figures).await?;
    }
    if wanted("b2") {
        b2_latency(&mut figures).await?;
    }
    if wanted("b3") {
        b3_output(&mut figures).await?;
    }
    if wanted("b4") {
        fan_out(&mut figures, "b4", 10, Disturbance::None).await?;
    }
    if wanted("b5") {
        fan_out(&mut figures, "b5", 500, Disturbance::None).await?;
    }
    if wanted("b9") {
        fan_out(&mut figures, "b9", 10, Disturbance::StalledClientDuringFlood).await?;
    }
    if wanted("b6") {
        b6_approvals(&mut figures).await?;
    }
    if wanted("b7") {
        b7_list(&mut figures).await?;
    }
    if wanted("b8") {
        b8_memory(&mut figures).await?;
    }
    if wanted("b10") {
        b10_agent_rate(&mut figures).await?;
    }
    if wanted("b11") {
        b11_isolated_start(&mut figures).await?;
    }
    if wanted("b12") {
        b12_agent_stream(&mut figures).await?;
    }
    if wanted("b13") {
        b13_retention(&mut figures).await?;
    }
    if wanted("b14") {
        fan_out(&mut figures, "b14", 10, Disturbance::Prune).await?;
    }
    for (name, value) in &figures {
        println!("{name}: {value}");
    }
    if write {
        write_results(Path::new("BENCHMARKS.md"), &figures)?;
    }
    Ok(())
}
