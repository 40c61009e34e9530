//! `warden exec | ls | show | logs | cancel | pause | resume | retry`: client commands
//! over the executions routes.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{absolute_path, print_json, print_table, Outcome, Remote};
use crate::cli::ExecArgs;
use crate::client::Client;
use crate::domain::{Execution, OutputLine, OutputStream};
use crate::http::pagination::Page;

/// How often `--follow` asks for new output while an execution runs.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

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
    let finished = follow(&client, execution.id.0).await?;
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

/// Prints output as it arrives until the execution is final; returns it.
async fn follow(client: &Client, id: i64) -> anyhow::Result<Execution> {
    let mut after = 0;
    loop {
        // Read the status first: once it is final, everything it printed is stored.
        let execution: Execution = client.get(&format!("/api/v1/executions/{id}")).await?;
        after = print_output(client, id, after).await?;
        if execution.status.is_final() {
            return Ok(execution);
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Prints every stored line after `after`; returns the last line number printed.
async fn print_output(client: &Client, id: i64, mut after: u64) -> anyhow::Result<u64> {
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    loop {
        let page: Page<OutputLine> =
            client.get(&format!("/api/v1/executions/{id}/output?after={after}&limit=10000")).await?;
        for line in &page.items {
            match line.stream {
                OutputStream::Stdout => writeln!(out, "{}", line.text)?,
                OutputStream::Stderr => writeln!(err, "{}", line.text)?,
            }
            after = line.n;
        }
        if page.next_cursor.is_none() {
            out.flush()?;
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
                e.profile.clone(),
                e.workspace.clone().unwrap_or_else(|| e.cwd.clone()),
                e.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                excerpt(&e.prompt, 50),
            ]
        })
        .collect();
    print_table(&["id", "status", "profile", "where", "exit", "prompt"], &rows);
    Ok(Outcome::Done)
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
    let execution: Execution = remote.client()?.get(&format!("/api/v1/executions/{id}")).await?;
    if json {
        print_json(&execution)?;
        return Ok(Outcome::Done);
    }
    println!("execution {} — {}", execution.id, execution.status);
    println!("  profile:   {} (provider {})", execution.profile, execution.provider);
    println!(
        "  where:     {}{}",
        execution.cwd,
        execution.workspace.map(|w| format!(" (workspace {w})")).unwrap_or_default()
    );
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
        println!("  error:     {error}");
    }
    if let Some(retry_of) = execution.retry_of {
        println!("  retry of:  {retry_of}");
    }
    Ok(Outcome::Done)
}

pub async fn logs(remote: &Remote, id: i64, follow_output: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    if follow_output {
        let finished = follow(&client, id).await?;
        return Ok(Outcome::Code(exit_code_of(&finished)));
    }
    // 404 for an unknown execution, before printing nothing.
    let _: Execution = client.get(&format!("/api/v1/executions/{id}")).await?;
    print_output(&client, id, 0).await?;
    Ok(Outcome::Done)
}

pub async fn control(remote: &Remote, id: i64, action: &str) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let execution: Execution = client.post(&format!("/api/v1/executions/{id}/{action}"), &json!({})).await?;
    match action {
        "retry" => println!("{} (retry of {id})", execution.id),
        "cancel" if !execution.status.is_final() => println!("cancelling {id}: its process group got SIGTERM"),
        _ => println!("{} {}", execution.id, execution.status),
    }
    Ok(Outcome::Done)
}
