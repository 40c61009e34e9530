//! `warden exec | ls | show | logs | cancel | pause | resume | retry`: client commands
//! over the executions routes.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{absolute_path, print_json, print_table, Outcome, Remote};
use crate::cli::ExecArgs;
use crate::client::{Client, ClientError, SseMessage};
use crate::domain::Page;
use crate::domain::Word;
use crate::domain::{Approval, Envelope, Execution, OutputLine, OutputStream};

pub async fn exec(remote: &Remote, args: ExecArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let mut env = BTreeMap::new();
    for pair in &args.env {
        let (key, value) = pair.split_once('=').with_context(|| format!("--env {pair:?} is not KEY=VALUE"))?;
        env.insert(key.to_owned(), value.to_owned());
    }
    let mut body = json!({ "prompt": args.prompt.join(" "), "env": env });
    if let Some(profile) = args.profile {
        body["profile"] = profile.into();
    }
    if let Some(timeout) = args.timeout {
        body["timeout_s"] = timeout.into();
    }
    if args.isolated {
        body["isolation"] = "worktree".into();
    }
    if let Some(base) = args.base {
        body["base"] = base.into();
    }
    match (args.workspace, args.cwd) {
        (Some(workspace), _) => body["workspace"] = workspace.into(),
        (None, cwd) => {
            let dir = match cwd {
                Some(dir) => absolute_path(dir)?,
                None => std::env::current_dir().context("reading the current directory")?,
            };
            body["cwd"] = dir.to_string_lossy().into_owned().into();
        }
    }
    let execution: Execution = client.post("/api/v1/executions", &body).await?;
    if args.json && !args.follow {
        print_json(&execution)?;
        return Ok(Outcome::Done);
    }
    if !args.follow {
        println!("{}", execution.id);
        return Ok(Outcome::Done);
    }
    let finished = follow(&client, execution.id.0, false).await?;
    Ok(Outcome::Code(exit_code_of(&finished)))
}

/// The exit code `--follow` ends with: the execution's own, or 1 when it has none.
fn exit_code_of(execution: &Execution) -> i32 {
    match execution.exit_code {
        Some(code) => code,
        None if execution.status == crate::domain::ExecutionStatus::Succeeded => 0,
        None => {
            let why = execution.error.as_deref().unwrap_or("");
            eprintln!(
                "warden: execution {} {}{}{why}",
                execution.id,
                execution.status,
                if why.is_empty() { "" } else { ": " }
            );
            1
        }
    }
}

/// Reads an SSE stream, handing each message to `on_message` until it returns a value.
/// A dropped connection is reopened after the last event seen (`Last-Event-ID`), so
/// nothing is handled twice.
async fn stream_with_resume<T>(
    client: &Client,
    path: &str,
    mut on_message: impl AsyncFnMut(SseMessage) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let mut last_seen: Option<u64> = None;
    let mut retry = Retry::new();
    loop {
        let mut stream = match client.sse(path, last_seen).await {
            Ok(stream) => stream,
            Err(e @ ClientError::Problem { .. }) => return Err(e.into()),
            Err(e) => {
                retry.wait(&e).await?;
                continue;
            }
        };
        loop {
            match stream.next().await {
                Ok(Some(message)) => {
                    retry.reset();
                    if message.id.is_some() {
                        last_seen = message.id;
                    }
                    if let Some(done) = on_message(message).await? {
                        return Ok(done);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    retry.wait(&e).await?;
                    break;
                }
            }
        }
    }
}

/// Prints output as it arrives (the execution's event stream) until the execution is
/// final; returns it. Lines a congested stream skipped are fetched from the history.
/// `raw` writes lines as they are even on a terminal.
pub async fn follow(client: &Client, id: i64, raw: bool) -> anyhow::Result<Execution> {
    let path = format!("/api/v1/executions/{id}/stream");
    stream_with_resume(client, &path, async |message: SseMessage| {
        match message.event.as_str() {
            "execution.output" => print_event_line(&serde_json::from_str(&message.data)?, raw)?,
            "skipped" => {
                let notice: serde_json::Value = serde_json::from_str(&message.data)?;
                let (from, to) = (notice["from_seq"].as_u64().unwrap_or(0), notice["to_seq"].as_u64().unwrap_or(0));
                for event in client.events_between("execution.output", Some(id), from, to).await? {
                    print_event_line(&event, raw)?;
                }
            }
            "end" => return Ok(Some(serde_json::from_str(&message.data)?)),
            _ => {}
        }
        Ok(None)
    })
    .await
}

/// Prints an `execution.output` event's line on the stream it came from.
fn print_event_line(envelope: &Envelope, raw: bool) -> anyhow::Result<()> {
    let text = envelope.data["text"].as_str().unwrap_or("");
    let stream = if envelope.data["stream"] == "stderr" { OutputStream::Stderr } else { OutputStream::Stdout };
    write_output_line(stream, text, raw)?;
    if stream == OutputStream::Stdout {
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Writes an execution's output line to the stream it came from: as it is with `raw`
/// or when that stream is not a terminal (a pipe gets the exact text), else with only
/// its colours kept and every other control sequence shown escaped.
fn write_output_line(stream: OutputStream, text: &str, raw: bool) -> std::io::Result<()> {
    use std::io::IsTerminal;
    use std::sync::OnceLock;
    static TERMINALS: OnceLock<(bool, bool)> = OnceLock::new();
    let (out_tty, err_tty) =
        *TERMINALS.get_or_init(|| (std::io::stdout().is_terminal(), std::io::stderr().is_terminal()));
    let shown =
        |tty: bool| if raw || !tty { std::borrow::Cow::Borrowed(text) } else { crate::terminal::keep_colours(text) };
    match stream {
        OutputStream::Stdout => writeln!(std::io::stdout().lock(), "{}", shown(out_tty)),
        OutputStream::Stderr => writeln!(std::io::stderr().lock(), "{}", shown(err_tty)),
    }
}

/// Reconnection with backoff: 100 ms doubling to 5 s, giving up after a minute without
/// a single event.
pub struct Retry {
    delay: Duration,
    since: Option<std::time::Instant>,
}

impl Retry {
    pub fn new() -> Self {
        Retry { delay: Duration::from_millis(100), since: None }
    }

    pub fn reset(&mut self) {
        self.delay = Duration::from_millis(100);
        self.since = None;
    }

    pub async fn wait(&mut self, error: &ClientError) -> anyhow::Result<()> {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("lost the connection to warden for a minute: {error}");
        }
        tracing::info!(error = %error, delay_ms = self.delay.as_millis() as u64, "connection lost; reconnecting");
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
        Ok(())
    }
}

/// Prints every stored line after `after`; returns the last line number printed.
async fn print_output(client: &Client, id: i64, mut after: u64, raw: bool) -> anyhow::Result<u64> {
    loop {
        let page: Page<OutputLine> =
            client.get(&format!("/api/v1/executions/{id}/output?after={after}&limit=10000")).await?;
        for line in &page.items {
            write_output_line(line.stream, &line.text, raw)?;
            after = line.n;
        }
        if page.next_cursor.is_none() {
            std::io::stdout().flush()?;
            if let Some(at) = page.pruned_at {
                eprintln!("(execution {id}'s output was removed by retention at {})", crate::domain::format_ts(&at));
            }
            return Ok(after);
        }
    }
}

pub async fn list(remote: &Remote, status: Option<String>, limit: usize, json: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let mut path = format!("/api/v1/executions?limit={}", limit.clamp(1, 500));
    if let Some(status) = status {
        path.push_str(&format!("&status={status}"));
    }
    let page: Page<Execution> = client.get(&path).await?;
    if json {
        print_json(&page.items)?;
        return Ok(Outcome::Done);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.status.to_string(),
                match e.sandbox.is_unconfined() {
                    true => format!("{} (unsandboxed)", e.profile),
                    false => e.profile.clone(),
                },
                e.workspace.clone().unwrap_or_else(|| e.cwd.clone()),
                e.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                excerpt(&e.prompt, 50),
            ]
        })
        .collect();
    print_table(&["id", "status", "profile", "where", "exit", "prompt"], &rows);
    Ok(Outcome::Done)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn excerpt(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max - 1).collect::<String>())
    }
}

pub async fn show(remote: &Remote, id: i64, json: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let execution: Execution = client.get(&format!("/api/v1/executions/{id}")).await?;
    let approvals: Vec<Approval> = super::all_pages(&client, &format!("/api/v1/approvals?execution_id={id}")).await?;
    if json {
        let mut shown = serde_json::to_value(&execution)?;
        shown["approvals"] = serde_json::to_value(&approvals)?;
        print_json(&shown)?;
        return Ok(Outcome::Done);
    }
    use crate::terminal::{escape, escape_line};
    println!("execution {} — {}", execution.id, execution.status);
    println!("  profile:   {} (provider {})", execution.profile, execution.provider);
    println!("  sandbox:   {}", super::catalog::shown_sandbox(execution.sandbox));
    println!(
        "  where:     {}{}",
        escape_line(&execution.cwd),
        execution.workspace.map(|w| format!(" (workspace {w})")).unwrap_or_default()
    );
    println!("  prompt:    {}", escape(&execution.prompt).replace('\n', "\n             "));
    println!("  argv:      {}", serde_json::to_string(&execution.argv)?);
    println!("  created:   {}", execution.created_at);
    if let Some(position) = execution.queue_position {
        println!("  queue:     {position} ahead of it");
    }
    if let Some(started) = execution.started_at {
        println!("  started:   {started}");
    }
    if let Some(finished) = execution.finished_at {
        println!("  finished:  {finished}");
    }
    if let Some(code) = execution.exit_code {
        println!("  exit code: {code}");
    }
    if let Some(error) = execution.error {
        println!("  error:     {}", escape_line(&error));
    }
    if let Some(retry_of) = execution.retry_of {
        println!("  retry of:  {retry_of}");
    }
    match execution.changes.as_ref().and_then(|c| c.totals) {
        Some(t) => println!("  changes:   +{} −{} in {} file{}", t.additions, t.deletions, t.files, plural(t.files)),
        None => {
            if let Some(error) = execution.changes.as_ref().and_then(|c| c.error.clone()) {
                println!("  changes:   not recorded ({})", escape_line(&error));
            }
        }
    }
    for approval in approvals.iter().rev() {
        let by = approval.decided_by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default();
        println!(
            "  approval:  {} {}{by} ({}): {}",
            approval.id,
            approval.status.as_str(),
            approval.kind.as_str(),
            escape_line(&approval.title)
        );
    }
    Ok(Outcome::Done)
}

pub async fn logs(remote: &Remote, id: i64, follow_output: bool, raw: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    if follow_output {
        let finished = follow(&client, id, raw).await?;
        return Ok(Outcome::Code(exit_code_of(&finished)));
    }
    // 404 for an unknown execution, before printing nothing.
    let _: Execution = client.get(&format!("/api/v1/executions/{id}")).await?;
    print_output(&client, id, 0, raw).await?;
    Ok(Outcome::Done)
}

/// `warden logs --transcript ID [-f]`: the agent's transcript as lines, then (with
/// `-f`) each new entry as it comes, until the execution ends.
pub async fn transcript(remote: &Remote, id: i64, follow_it: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let execution: Execution = client.get(&format!("/api/v1/executions/{id}")).await?;
    if execution.agent.is_none() {
        anyhow::bail!(
            "execution {id} has no transcript: its profile {} writes plain text (warden logs {id} shows it)",
            crate::terminal::escape_line(&execution.profile)
        );
    }
    if follow_it {
        let path = format!("/api/v1/executions/{id}/stream");
        let finished = stream_with_resume(&client, &path, async |message: SseMessage| {
            match message.event.as_str() {
                kind if kind.starts_with("agent.") => print_entry(&serde_json::from_str(&message.data)?)?,
                "skipped" => {
                    let notice: serde_json::Value = serde_json::from_str(&message.data)?;
                    let (from, to) = (notice["from_seq"].as_u64().unwrap_or(0), notice["to_seq"].as_u64().unwrap_or(0));
                    for event in client.events_between("agent.*", Some(id), from, to).await? {
                        print_entry(&event)?;
                    }
                }
                "end" => return Ok(Some(serde_json::from_str(&message.data)?)),
                _ => {}
            }
            Ok(None)
        })
        .await?;
        return Ok(Outcome::Code(exit_code_of(&finished)));
    }
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(after) => format!("/api/v1/executions/{id}/transcript?limit=500&cursor={after}"),
            None => format!("/api/v1/executions/{id}/transcript?limit=500"),
        };
        let page: crate::domain::Page<Envelope> = client.get(&path).await?;
        for entry in &page.items {
            print_entry(entry)?;
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(Outcome::Done)
}

fn print_entry(envelope: &Envelope) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for (_, line) in crate::agent::render::entry_lines(&envelope.kind, &envelope.data) {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

pub async fn control(remote: &Remote, id: i64, action: &str) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let execution: Execution = client.post(&format!("/api/v1/executions/{id}/{action}"), &json!({})).await?;
    match action {
        "retry" => println!("{} (retry of {id})", execution.id),
        "discard" => println!("{id}: its worktree and branch are removed"),
        "cancel" if !execution.status.is_final() => println!("cancelling {id}: its process group got SIGTERM"),
        _ => println!("{} {}", execution.id, execution.status),
    }
    Ok(Outcome::Done)
}

/// `warden rm ID…`: deletes each final execution; one that cannot be deleted is named
/// (and the exit status is 1), the others go on.
pub async fn remove(remote: &Remote, ids: &[i64]) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let mut failed = false;
    for id in ids {
        match client.delete::<crate::domain::Removed>(&format!("/api/v1/executions/{id}")).await {
            Ok(removed) => println!(
                "{id}: deleted ({} output lines, {} events, {})",
                removed.output_lines,
                removed.events,
                human_bytes(removed.bytes)
            ),
            Err(e) => {
                failed = true;
                eprintln!("{id}: {e}");
            }
        }
    }
    Ok(if failed { Outcome::Code(1) } else { Outcome::Done })
}

/// `warden prune [--dry-run]`: runs a retention pass and says what it freed (would free).
pub async fn prune(remote: &Remote, dry_run: bool, json: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let report: crate::domain::PruneReport =
        client.post(&format!("/api/v1/prune?dry_run={dry_run}"), &json!({})).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(Outcome::Done);
    }
    let verb = if dry_run { "would free" } else { "freed" };
    println!(
        "{} execution(s): {} output lines, {} events ({} of text)",
        report.executions,
        report.output_lines,
        report.events,
        human_bytes(report.bytes)
    );
    println!(
        "snapshot objects: {} ({}); worktrees: {}",
        report.snapshot_objects,
        human_bytes(report.snapshot_bytes),
        report.worktrees
    );
    let after = if dry_run { "about " } else { "" };
    println!(
        "database: {} before, {after}{} after; {verb} {} in {} ms",
        human_bytes(report.database_bytes_before),
        human_bytes(report.database_bytes_after),
        human_bytes(report.database_bytes_before.saturating_sub(report.database_bytes_after)),
        report.took_ms
    );
    Ok(Outcome::Done)
}

/// Bytes for a person: `812 B`, `4.2 MB`, `1.3 GB`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

/// `warden apply ID`: the execution's work onto the user's work tree, or the files that
/// conflict (nothing changed then).
pub async fn apply(remote: &Remote, id: i64) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let applied: crate::domain::AppliedWork =
        client.post(&format!("/api/v1/executions/{id}/apply"), &json!({})).await?;
    println!("applied the work of {id}: {} file(s) changed, uncommitted", applied.files.len());
    for file in &applied.files {
        println!("  {}", crate::terminal::escape_line(file));
    }
    Ok(Outcome::Done)
}

/// `warden merge ID`: the execution's work as a commit on a branch.
pub async fn merge(remote: &Remote, id: i64, request: crate::domain::MergeRequest) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let merged: crate::domain::MergedWork = client.post(&format!("/api/v1/executions/{id}/merge"), &request).await?;
    let how = if merged.squash { "one commit" } else { "a merge commit" };
    let short = merged.commit.get(..12).unwrap_or(&merged.commit);
    println!(
        "merged the work of {id} into {} as {how} {short}: {} file(s); its worktree and branch are removed",
        crate::terminal::escape_line(&merged.into),
        merged.files.len()
    );
    for file in &merged.files {
        println!("  {}", crate::terminal::escape_line(file));
    }
    Ok(Outcome::Done)
}

/// `warden events`: tails the event stream, resuming after the last event on reconnect.
pub async fn events(
    remote: &Remote,
    topics: Option<String>,
    since: Option<u64>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let mut path = "/api/v1/events".to_owned();
    let mut query = Vec::new();
    if let Some(topics) = topics {
        query.push(format!("topics={topics}"));
    }
    if let Some(since) = since {
        query.push(format!("since={since}"));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    stream_with_resume(&client, &path, async |message: SseMessage| {
        let mut out = std::io::stdout().lock();
        if json || message.event == "skipped" {
            writeln!(out, "{}", message.data)?;
        } else if let Ok(envelope) = serde_json::from_str::<Envelope>(&message.data) {
            writeln!(out, "{}", describe(&envelope))?;
        }
        out.flush()?;
        Ok(None::<()>)
    })
    .await?;
    Ok(Outcome::Done)
}

/// One line for a person: seq, type, what it is about, the gist.
fn describe(event: &Envelope) -> String {
    let about = event.execution_id.map(|id| format!(" execution {id}")).unwrap_or_default();
    let gist = match event.kind.as_str() {
        "execution.output" => event.data["text"].as_str().unwrap_or("").to_owned(),
        kind if kind.starts_with("execution.") => event.data["status"].as_str().unwrap_or("").to_owned(),
        _ => event.data.to_string(),
    };
    format!("{:>6}  {:<20}{about}  {}", event.seq, event.kind, crate::terminal::escape_line(&gist))
}
