//! `warden session …` and `warden chat`: conversations from the terminal. A turn's
//! output is followed live through its execution's event stream.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use super::executions::follow;
use super::{absolute_path, print_json, print_table, Outcome, Remote};
use crate::cli::{ChatArgs, SessionCommand, SessionTarget};
use crate::client::Client;
use crate::domain::Page;
use crate::domain::Word;
use crate::domain::{ExecutionId, Role, Session, SessionId, SessionMessage};

pub async fn session(remote: &Remote, command: SessionCommand) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    match command {
        SessionCommand::New { target, json } => {
            let session = create(&client, &target).await?;
            if json {
                print_json(&session)?;
            } else {
                println!("{}", session.id);
            }
        }
        SessionCommand::Ls { status, json } => {
            let path = match status {
                Some(status) => format!("/api/v1/sessions?limit=500&status={status}"),
                None => "/api/v1/sessions?limit=500".into(),
            };
            let page: Page<Session> = client.get(&path).await?;
            if json {
                print_json(&page.items)?;
            } else {
                let rows: Vec<Vec<String>> = page
                    .items
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.to_string(),
                            s.status.as_str().to_owned(),
                            s.profile.clone(),
                            s.turns.to_string(),
                            s.workspace.clone().unwrap_or_else(|| s.cwd.clone()),
                            s.title.clone(),
                        ]
                    })
                    .collect();
                print_table(&["id", "status", "profile", "turns", "where", "title"], &rows);
            }
        }
        SessionCommand::Send { id, message, follow: follow_turn } => {
            let sent: Value =
                client.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": message.join(" ")})).await?;
            if follow_turn {
                return Ok(Outcome::Code(follow_turn_of(&client, id, &sent).await?));
            }
            match sent["execution"]["id"].as_i64() {
                Some(execution) => println!("message {} sent: execution {execution}", sent["message"]["id"]),
                None => println!("message {} sent: it waits for the running turn", sent["message"]["id"]),
            }
        }
        SessionCommand::Show { id, json } => {
            let session: Session = client.get(&format!("/api/v1/sessions/{id}")).await?;
            let messages = transcript(&client, id).await?;
            if json {
                print_json(&json!({ "session": session, "messages": messages }))?;
            } else {
                println!(
                    "session {} — {} ({}, {} turns, {})",
                    session.id,
                    crate::terminal::escape_line(&session.title),
                    session.profile,
                    session.turns,
                    session.status.as_str()
                );
                for message in messages {
                    let who = match message.role {
                        Role::User => "you",
                        Role::Agent => "agent",
                    };
                    println!("\n{who}>");
                    println!("{}", crate::terminal::escape(&message.content));
                }
            }
        }
        SessionCommand::Close { id } => {
            let session: Session = client.delete(&format!("/api/v1/sessions/{id}")).await?;
            println!("session {} closed", session.id);
        }
    }
    Ok(Outcome::Done)
}

async fn create(client: &Client, target: &SessionTarget) -> anyhow::Result<Session> {
    let mut body = json!({ "profile": target.profile, "title": target.title });
    match (&target.workspace, &target.cwd) {
        (Some(workspace), _) => body["workspace"] = workspace.clone().into(),
        (None, cwd) => {
            let dir = match cwd {
                Some(dir) => absolute_path(dir.clone())?,
                None => std::env::current_dir()?,
            };
            body["cwd"] = dir.to_string_lossy().into_owned().into();
        }
    }
    Ok(client.post("/api/v1/sessions", &body).await?)
}

async fn transcript(client: &Client, id: SessionId) -> anyhow::Result<Vec<SessionMessage>> {
    super::all_pages(client, &format!("/api/v1/sessions/{id}/messages")).await
}

/// Waits for a sent message's turn to start (it may wait behind another), then prints
/// its output as it comes; returns its exit code.
async fn follow_turn_of(client: &Client, session_id: SessionId, sent: &Value) -> anyhow::Result<i32> {
    let message_id = sent["message"]["id"].as_i64().context("warden's answer names no message")?;
    let mut execution = sent["execution"]["id"].as_i64().map(ExecutionId);
    // Its turn may wait behind another, for as long as that one runs.
    let execution = loop {
        if let Some(id) = execution {
            break id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let messages = transcript(client, session_id).await?;
        execution = messages.iter().find(|m| m.id == message_id).and_then(|m| m.execution_id);
    };
    let finished = follow(client, execution.0, false).await?;
    Ok(finished.exit_code.unwrap_or(if finished.status.is_final() && finished.error.is_none() { 0 } else { 1 }))
}

/// The interactive loop: `you> ` prompt, the agent's output streamed, Ctrl-D to end.
pub async fn chat(remote: &Remote, args: ChatArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let session = match args.session {
        Some(id) => client.get::<Session>(&format!("/api/v1/sessions/{id}")).await?,
        None => create(&client, &args.target).await?,
    };
    println!(
        "warden chat — session {} with {} in {} (Ctrl-D to leave)",
        session.id,
        session.profile,
        session.workspace.clone().unwrap_or_else(|| session.cwd.clone())
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        print!("\nyou> ");
        std::io::stdout().flush()?;
        let Some(line) = lines.next_line().await? else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let sent: Value =
            client.post(&format!("/api/v1/sessions/{}/messages", session.id), &json!({"content": line})).await?;
        println!();
        let code = follow_turn_of(&client, session.id, &sent).await?;
        if code != 0 {
            println!("[the turn ended with exit code {code}]");
        }
    }
    println!(
        "\nsession {} kept: `warden session show {}` prints it, `warden chat --session {}` goes on.",
        session.id, session.id, session.id
    );
    Ok(Outcome::Done)
}
