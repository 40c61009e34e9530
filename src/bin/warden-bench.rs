//! `warden-bench`: starts a real daemon (`warden serve`) in a temp home as a separate
//! process, drives it over its public API, prints each figure as `name: value` and, with
//! `--write`, rewrites the results table in BENCHMARKS.md. Run it with `make bench`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use warden::client::Client;
use warden::home::Home;

/// A daemon process in a temp home, killed on drop.
struct BenchDaemon {
    child: Child,
    client: Client,
    _dir: tempfile::TempDir,
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

fn warden_exe() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let exe = me.with_file_name("warden");
    if !exe.exists() {
        bail!("{} not found: build it first (cargo build --release)", exe.display());
    }
    Ok(exe)
}

async fn start_daemon(config: &str) -> anyhow::Result<BenchDaemon> {
    let dir = tempfile::tempdir()?;
    let home = Home::new(dir.path().join("home"));
    home.ensure()?;
    std::fs::write(home.config_path(), config)?;
    let child = Command::new(warden_exe()?)
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

/// B1: 1,000 executions of `true` with a provider limit of 2, submitted as fast as
/// possible; executions per second until all are final, beside `xargs -P2 -n1 true`.
async fn b1_throughput(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    const N: usize = 1000;
    let daemon = start_daemon("[providers.local]\nmax_concurrent = 2\n").await?;
    let client = &daemon.client;
    let started = Instant::now();
    let bodies: Vec<Value> = (0..N).map(|_| json!({"prompt": "true", "cwd": "/tmp"})).collect();
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
    let failed: Value = client.get("/api/v1/executions?status=failed,cancelled,interrupted&limit=1").await?;
    if !failed["items"].as_array().is_some_and(|a| a.is_empty()) {
        bail!("B1: some executions did not succeed: {failed}");
    }

    let floor_started = Instant::now();
    let status =
        Command::new("sh").args(["-c", &format!("seq {N} | xargs -P2 -n1 true")]).status().context("running xargs")?;
    if !status.success() {
        bail!("xargs failed");
    }
    let floor_rate = N as f64 / floor_started.elapsed().as_secs_f64();
    figures.push(("b1_executions_per_s".into(), format!("{warden_rate:.0}")));
    figures.push(("b1_xargs_floor_per_s".into(), format!("{floor_rate:.0}")));
    figures.push(("b1_ratio_to_floor".into(), format!("{:.2}", warden_rate / floor_rate)));
    Ok(())
}

/// B2: an idle daemon, 200 single executions one after another: POST → process start
/// (the process prints its own start time) and POST → final state visible.
async fn b2_latency(figures: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    const N: usize = 200;
    let daemon = start_daemon("[profiles.clock]\nprovider = \"local\"\ncommand = [\"date\", \"+%s%N\"]\n").await?;
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
    figures.push(("b2_post_to_start_p50_ms".into(), format!("{:.2}", percentile(&to_start, 50.0))));
    figures.push(("b2_post_to_start_p99_ms".into(), format!("{:.2}", percentile(&to_start, 99.0))));
    figures.push(("b2_post_to_final_visible_p50_ms".into(), format!("{:.2}", percentile(&to_final, 50.0))));
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
    for (name, value) in &figures {
        println!("{name}: {value}");
    }
    if write {
        write_results(Path::new("BENCHMARKS.md"), &figures)?;
    }
    Ok(())
}
