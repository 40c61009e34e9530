//! `warden serve | start | stop | status`: run the daemon in the foreground, in the
//! background, stop it, ask after it. The PID lock in the data dir says whether a daemon
//! runs; `server.json` says where.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{print_json, Outcome, Remote};
use crate::cli::ServeArgs;
use crate::client::Client;
use crate::config::{Config, Overrides};
use crate::daemon::Daemon;
use crate::home::Home;

/// How long `start` waits for the daemon to answer.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often the lifecycle commands look again while they wait.
const POLL: Duration = Duration::from_millis(50);

fn overrides(args: &ServeArgs) -> Overrides {
    Overrides { host: args.host.clone(), port: args.port, allow_remote: args.allow_remote }
}

/// The daemon in the foreground, until SIGINT or SIGTERM (a second one exits at once).
pub fn serve(home: Home, args: &ServeArgs) -> anyhow::Result<Outcome> {
    let config = Config::load(home, &overrides(args)).map_err(anyhow::Error::msg)?;
    exit_on_panic();
    actix_web::rt::System::new().block_on(async move {
        // Listen before anything is announced, so a signal right after start is graceful.
        let mut signals = Signals::listen()?;
        let daemon = Daemon::build(config).await?;
        let handle = daemon.handle();
        actix_web::rt::spawn(async move {
            let signal = signals.next().await;
            tracing::info!(signal, "stopping gracefully (send it again to stop at once)");
            actix_web::rt::spawn(async move {
                signals.next().await;
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            });
            handle.shutdown().await;
        });
        daemon.run_until_stopped().await
    })?;
    Ok(Outcome::Done)
}

/// Crash-only: a panic anywhere in the daemon (an actor, the writer) ends the process
/// rather than leaving HTTP workers to answer for dead actors. The database is crash-safe
/// and the next start recovers a consistent state (running work is marked interrupted).
fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "warden panicked and exits; the next start recovers");
        report(info);
        std::process::exit(101);
    }));
}

/// SIGTERM and SIGINT, as a stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Starts `warden serve` detached (own session, log to `warden.log`) and waits until it
/// answers `/health`.
pub async fn start(home: Home, args: &ServeArgs, verbose: u8) -> anyhow::Result<Outcome> {
    if let Some(pid) = home.running_pid() {
        let url = home.read_server_info().map(|s| s.url).unwrap_or_else(|_| "(starting)".into());
        println!("warden is already running (pid {pid}) at {url}");
        return Ok(Outcome::Done);
    }
    // Check the config here too, so a bad file is reported at once and plainly.
    Config::load(home.clone(), &overrides(args)).map_err(anyhow::Error::msg)?;
    home.ensure()?;

    let log_path = home.log_path();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);

    let exe = std::env::current_exe().context("finding the warden executable")?;
    let mut command = Command::new(exe);
    command.arg("serve").arg("--home").arg(home.dir()).arg("--log-file").arg(&log_path);
    if let Some(port) = args.port {
        command.arg("--port").arg(port.to_string());
    }
    if let Some(host) = &args.host {
        command.arg("--host").arg(host);
    }
    if args.allow_remote {
        command.arg("--allow-remote");
    }
    if verbose > 0 {
        command.arg(format!("-{}", "v".repeat(verbose as usize)));
    }
    command
        .env_remove("WARDEN_URL")
        .env_remove("WARDEN_TOKEN")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our terminal and
    // process group so that Ctrl-C in this shell does not reach it.
    unsafe {
        command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child = command.spawn().context("spawning the daemon")?;
    let pid = child.id();

    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Some(status) = child.try_wait()? {
            let reason = log_since(&log_path, log_start);
            bail!("the daemon exited ({status}) before it answered:\n{}", reason.trim_end());
        }
        if let Ok(info) = home.read_server_info() {
            if info.pid == pid && Client::new(&info.url, "").health().await.is_ok() {
                println!("warden started (pid {pid}) at {}", info.url);
                if let Ok(token) = home.read_token() {
                    println!("dashboard: {}", Client::new(&info.url, token).dashboard_url());
                }
                let asked = args.port.unwrap_or(info.port);
                if asked != 0 && asked != info.port {
                    println!("note: port {asked} was busy, so warden listens on port {} instead", info.port);
                }
                return Ok(Outcome::Done);
            }
        }
        if Instant::now() > deadline {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            bail!(
                "the daemon did not answer within {}s; its log says:\n{}",
                START_DEADLINE.as_secs(),
                log_since(&log_path, log_start).trim_end()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the log gained since `offset` (the failed start's own lines).
fn log_since(path: &std::path::Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_string(&mut text);
    }
    if text.trim().is_empty() {
        format!("(nothing; see {})", path.display())
    } else {
        text
    }
}

/// SIGTERM to the daemon, then wait until its PID lock is released.
pub async fn stop(home: Home) -> anyhow::Result<Outcome> {
    let Some(pid) = home.running_pid() else {
        println!("warden is not running");
        return Ok(Outcome::Done);
    };
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).with_context(|| format!("signalling pid {pid}"))?;
    // The daemon gives running executions their grace period; wait somewhat longer.
    let grace =
        Config::load(home.clone(), &Overrides::default()).map(|c| c.shutdown_grace).unwrap_or(Duration::from_secs(30));
    let deadline = Instant::now() + grace + Duration::from_secs(30);
    while home.running_pid().is_some() || process_alive(pid) {
        if Instant::now() > deadline {
            bail!("warden (pid {pid}) is still running {}s after SIGTERM", (grace + Duration::from_secs(30)).as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
    println!("warden stopped (pid {pid})");
    Ok(Outcome::Done)
}

/// Whether a process exists and is not a zombie (a daemon whose parent, `warden start`,
/// is gone is reaped by init, which may take a moment).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Running or not; with details from `/api/v1/status` when it is.
pub async fn status(remote: &Remote, json: bool) -> anyhow::Result<Outcome> {
    let running = remote.home.running_pid();
    if running.is_none() && remote.url.is_none() {
        if json {
            print_json(&serde_json::json!({ "running": false }))?;
        } else {
            println!("warden is not running");
        }
        return Ok(Outcome::NotRunning);
    }
    let status: serde_json::Value = remote.client()?.get("/api/v1/status").await?;
    if json {
        let mut out = status.clone();
        out["running"] = true.into();
        print_json(&out)?;
    } else {
        let counts = &status["counts"];
        println!(
            "warden {} is running (pid {}) at {}",
            status["version"].as_str().unwrap_or("?"),
            status["pid"],
            status["url"].as_str().unwrap_or("?")
        );
        println!("  uptime:     {}", human_duration(status["uptime_s"].as_u64().unwrap_or(0)));
        println!("  data dir:   {}", status["data_dir"].as_str().unwrap_or("?"));
        match status["sandbox"]["landlock_abi"].as_i64() {
            Some(abi) => println!("  sandbox:    Landlock ABI {abi}: agents are kept out of the data dir"),
            None => println!("  sandbox:    unavailable (no Landlock in this kernel): agents run unsandboxed"),
        }
        println!(
            "  workspaces: {}, profiles: {}, providers: {}",
            counts["workspaces"], counts["profiles"], counts["providers"]
        );
        println!("  approvals pending: {}", counts["pending_approvals"]);
        println!("  clients: {} of {}", counts["clients"]["connected"], counts["clients"]["max"]);
    }
    Ok(Outcome::Done)
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}
