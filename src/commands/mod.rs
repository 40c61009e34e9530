//! What each `warden` subcommand does. `run` sets up logging, picks the command and turns
//! its outcome into an exit code: 0 done, 1 failed (one readable line on stderr), 3 not
//! running (`status`).

mod approvals;
mod catalog;
mod changes;
mod dashboards;
mod doctor;
mod executions;
mod generated;
mod lifecycle;
mod service;
mod sessions;

use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, HookCommand};
use crate::client::Client;
use crate::home::Home;

/// How a command ended, when it did not simply succeed or fail.
pub enum Outcome {
    Done,
    NotRunning,
    /// Exit with this code (an execution's own, for `exec --follow`).
    Code(i32),
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let (daemon, log_file) = match &cli.command {
        Command::Serve(args) => (true, args.log_file.clone()),
        _ => (false, None),
    };
    init_logging(cli.verbose, daemon, log_file.as_deref());
    match dispatch(cli) {
        Ok(Outcome::Done) => 0,
        Ok(Outcome::NotRunning) => 3,
        Ok(Outcome::Code(code)) => code,
        Err(e) => {
            eprintln!("warden: {}", one_line(&e));
            1
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    // Generated from the command line's definition: no data dir needed.
    match cli.command {
        Command::Completions { shell } => return generated::completions(shell),
        Command::Man => return generated::man_page(),
        _ => {}
    }
    let home = Home::resolve(cli.home.clone())?;
    let remote = Remote { home: home.clone(), url: cli.url.clone(), token: cli.token.clone() };
    match cli.command {
        Command::Serve(args) => lifecycle::serve(home, &args),
        Command::Start(args) => block_on(lifecycle::start(home, &args, cli.verbose)),
        Command::Stop => block_on(lifecycle::stop(home)),
        Command::Status { json } => block_on(lifecycle::status(&remote, json)),
        Command::Exec(args) => block_on(executions::exec(&remote, args)),
        Command::Dash => block_on(dashboards::terminal(&remote)),
        Command::Doctor { json } => block_on(doctor::doctor(&remote, json)),
        Command::Notify(crate::cli::NotifyCommand::Test { json }) => block_on(notify_test(&remote, json)),
        Command::Service(command) => service::service(&home, command),
        Command::Completions { shell } => generated::completions(shell),
        Command::Man => generated::man_page(),
        Command::Open { no_browser } => dashboards::open(&remote, no_browser),
        Command::Ls { status, limit, json } => block_on(executions::list(&remote, status, limit, json)),
        Command::Show { id, json } => block_on(executions::show(&remote, id, json)),
        Command::Logs { id, follow, raw, transcript: false } => block_on(executions::logs(&remote, id, follow, raw)),
        Command::Logs { id, follow, transcript: true, .. } => block_on(executions::transcript(&remote, id, follow)),
        Command::Diff { id, path, stat, context, color } => {
            block_on(changes::diff(&remote, changes::DiffArgs { id, path, stat, context, color }))
        }
        Command::Events { topics, since, json } => block_on(executions::events(&remote, topics, since, json)),
        Command::Cancel { id } => block_on(executions::control(&remote, id, "cancel")),
        Command::Pause { id } => block_on(executions::control(&remote, id, "pause")),
        Command::Resume { id } => block_on(executions::control(&remote, id, "resume")),
        Command::Retry { id } => block_on(executions::control(&remote, id, "retry")),
        Command::Rm { ids } => block_on(executions::remove(&remote, &ids)),
        Command::Prune { dry_run, json } => block_on(executions::prune(&remote, dry_run, json)),
        Command::Discard { id } => block_on(executions::control(&remote, id, "discard")),
        Command::Apply { id } => block_on(executions::apply(&remote, id)),
        Command::Merge { id, into, squash, no_squash, message } => {
            let squash = (squash || no_squash).then_some(squash);
            block_on(executions::merge(&remote, id, crate::domain::MergeRequest { into, squash, message }))
        }
        Command::Approvals { all, json } => block_on(approvals::list(&remote, all, json)),
        Command::Approve { id, reason } => block_on(approvals::decide(&remote, id, "approve", reason)),
        Command::Deny { id, reason } => block_on(approvals::decide(&remote, id, "deny", reason)),
        Command::Session(cmd) => block_on(sessions::session(&remote, cmd)),
        Command::Chat(args) => block_on(sessions::chat(&remote, args)),
        Command::Hook(HookCommand::Claude(args)) => block_on(approvals::claude_hook(&remote, args)),
        Command::Workspace(cmd) => block_on(catalog::workspace(&remote, cmd)),
        Command::Profile(cmd) => block_on(catalog::profile(&remote, cmd)),
        Command::Provider(cmd) => block_on(catalog::provider(&remote, cmd)),
    }
}

/// Where client commands find the daemon.
pub struct Remote {
    pub home: Home,
    pub url: Option<String>,
    pub token: Option<String>,
}

impl Remote {
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::discover(&self.home, self.url.clone(), self.token.clone())
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<Outcome>>>(future: F) -> anyhow::Result<Outcome> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future)
}

/// Logs go to stderr. The daemon logs at info by default, client commands at warn;
/// `-v` and `-vv` raise that, and `RUST_LOG` overrides both.
fn init_logging(verbose: u8, daemon: bool, log_file: Option<&std::path::Path>) {
    let level = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},actix_server=warn,actix_web=warn,h2=warn,hyper=warn")));
    if let Some(path) = log_file {
        let max_bytes = std::env::var("WARDEN_LOG_MAX_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(crate::logfile::DEFAULT_MAX_BYTES);
        match crate::logfile::RotatingLog::open(path, max_bytes, true) {
            Ok(log) => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_ansi(false)
                    .log_internal_errors(false)
                    .with_writer(log)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("warden: cannot open the log {}: {e}; logging to stderr", path.display()),
        }
    }
    // A log that cannot be written (a full disk) is skipped: reporting that on stderr,
    // which is the log, would panic the daemon.
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

/// Prints rows under headers, columns padded to their widest cell. Cells may hold text
/// an agent wrote: control characters are shown escaped, never obeyed.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| crate::terminal::escape_line(cell).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Every item of a list route, page by page (`path` may hold a query already).
pub async fn all_pages<T: serde::de::DeserializeOwned>(client: &Client, path: &str) -> anyhow::Result<Vec<T>> {
    let joiner = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{joiner}limit=500&{}", serde_urlencoded::to_string([("cursor", c)])?),
            None => format!("{path}{joiner}limit=500"),
        };
        let page: crate::domain::Page<T> = client.get(&url).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(items),
        }
    }
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A path made absolute against the current directory (for paths sent to the daemon).
pub fn absolute_path(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

/// `warden notify test`: one test notification to every target, and how each went.
async fn notify_test(remote: &Remote, json: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let results: Vec<crate::actors::notifier::TestResult> =
        client.post("/api/v1/notify/test", &serde_json::json!({})).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else if results.is_empty() {
        println!("no notification targets: add [[notify]] entries to config.toml");
    }
    if !json {
        for result in &results {
            println!("{} {}: {}", if result.ok { "ok  " } else { "FAIL" }, result.target, result.detail);
        }
    }
    Ok(if results.iter().all(|r| r.ok) { Outcome::Done } else { Outcome::Code(1) })
}
