//! `warden approvals | approve | deny | hook claude`: answering approvals from the CLI,
//! and the Claude Code PreToolUse bridge that asks warden before a tool runs.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};

use super::{print_json, print_table, Outcome, Remote};
use crate::cli::{ClaudeHookArgs, OnError};
use crate::client::{Client, ClientError};
use crate::domain::{Approval, ApprovalStatus, Decision};
use crate::http::pagination::Page;

pub async fn list(remote: &Remote, all: bool, json: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let path = if all { "/api/v1/approvals?limit=500" } else { "/api/v1/approvals?status=pending&limit=500" };
    let page: Page<Approval> = client.get(path).await?;
    if json {
        print_json(&page.items)?;
        return Ok(Outcome::Done);
    }
    let rows: Vec<Vec<String>> = page
        .items
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.status.as_str().to_owned(),
                a.source.clone(),
                a.execution_id.map(|e| e.to_string()).unwrap_or_default(),
                a.expires_at.format("%H:%M:%S").to_string(),
                a.title.clone(),
            ]
        })
        .collect();
    print_table(&["id", "status", "source", "execution", "expires", "title"], &rows);
    Ok(Outcome::Done)
}

/// Who the CLI says it is when it answers.
fn cli_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    format!("cli:{user}")
}

pub async fn decide(remote: &Remote, id: i64, decision: &str, reason: Option<String>) -> anyhow::Result<Outcome> {
    let client = remote.client()?.named(cli_name());
    let body = json!({ "decision": decision, "reason": reason });
    match client.post::<Approval>(&format!("/api/v1/approvals/{id}"), &body).await {
        Ok(approval) => {
            println!("approval {} {}", approval.id, approval.status.as_str());
            Ok(Outcome::Done)
        }
        Err(ClientError::Problem { code, body, .. }) if code == "already_decided" || code == "expired" => {
            let winner: Approval = serde_json::from_value(body["approval"].clone())?;
            let by = winner.decided_by.as_deref().unwrap_or("?");
            eprintln!("warden: this answer lost: approval {id} was already {} by {by}", winner.status.as_str());
            Ok(Outcome::Code(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// Claude Code's PreToolUse hook. Always exits 0 with Claude's decision on stdout (or
/// nothing, for a tool that is not guarded).
pub async fn claude_hook(remote: &Remote, args: ClaudeHookArgs) -> anyhow::Result<Outcome> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let hook: Value = match serde_json::from_str(&input) {
        Ok(hook) => hook,
        Err(e) => {
            answer("ask", &format!("warden could not read the hook input: {e}"));
            return Ok(Outcome::Done);
        }
    };
    let tool = hook["tool_name"].as_str().unwrap_or("").to_owned();
    if !args.tools.is_empty() && !args.tools.iter().any(|t| t == &tool) {
        return Ok(Outcome::Done);
    }
    match ask(remote, &hook, &tool, args.timeout).await {
        Ok(approval) => {
            let (permission, reason) = describe_outcome(&approval);
            answer(permission, &reason);
        }
        Err(e) => {
            let permission = match args.on_error {
                OnError::Ask => "ask",
                OnError::Deny => "deny",
            };
            answer(permission, &format!("warden is not reachable: {e}"));
        }
    }
    Ok(Outcome::Done)
}

/// Creates the approval and waits (long polls) until it is settled.
async fn ask(remote: &Remote, hook: &Value, tool: &str, timeout: u64) -> anyhow::Result<Approval> {
    let client: Client = remote.client()?;
    let input = &hook["tool_input"];
    let gist = input["command"]
        .as_str()
        .or_else(|| input["file_path"].as_str())
        .or_else(|| input["url"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| input.to_string());
    let gist: String = gist.split_whitespace().collect::<Vec<_>>().join(" ");
    let gist =
        if gist.chars().count() > 120 { format!("{}…", gist.chars().take(119).collect::<String>()) } else { gist };
    let execution_id = std::env::var("WARDEN_EXECUTION_ID").ok().and_then(|v| v.parse::<i64>().ok());
    let body = json!({
        "title": format!("{tool}: {gist}"),
        "details": {
            "tool_name": tool,
            "tool_input": input,
            "tool_use_id": hook["tool_use_id"],
            "claude_session_id": hook["session_id"],
            "cwd": hook["cwd"],
        },
        "timeout_s": timeout.max(1),
        "source": "claude-code",
        "execution_id": execution_id,
    });
    let mut approval: Approval = client.post("/api/v1/approvals", &body).await?;
    // The arbiter expires it at the deadline; wait a little past that for the answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout + 10);
    while approval.status == ApprovalStatus::Pending && std::time::Instant::now() < deadline {
        let wait = deadline.saturating_duration_since(std::time::Instant::now()).as_secs().clamp(1, 300);
        approval = client.get(&format!("/api/v1/approvals/{}?wait={wait}", approval.id)).await?;
    }
    Ok(approval)
}

fn describe_outcome(approval: &Approval) -> (&'static str, String) {
    let by = approval.decided_by.clone().unwrap_or_else(|| "?".into());
    let because = approval.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    match (approval.status, approval.outcome()) {
        (ApprovalStatus::Expired, Some(decision)) => {
            let word = if decision == Decision::Approve { "allow" } else { "deny" };
            (word, format!("no answer in time; warden applied the default ({})", decision.as_str()))
        }
        (_, Some(Decision::Approve)) => ("allow", format!("approved in warden by {by}{because}")),
        (_, Some(Decision::Deny)) => ("deny", format!("{} in warden by {by}{because}", approval.status.as_str())),
        (_, None) => ("ask", "warden got no decision in time".into()),
    }
}

fn answer(permission: &str, reason: &str) {
    let out = json!({
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": permission,
            "permissionDecisionReason": reason,
        }
    });
    println!("{out}");
}
