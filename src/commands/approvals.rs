//! `warden approvals | approve | deny | hook claude`: answering approvals from the CLI,
//! and the Claude Code PreToolUse bridge that asks warden before a tool runs.

use std::io::Read;
use std::time::Duration;

use serde_json::{json, Value};

use super::{all_pages, print_json, print_table, Outcome, Remote};
use crate::cli::{ClaudeHookArgs, OnError};
use crate::client::{Client, ClientError};
use crate::domain::Page;
use crate::domain::Word;
use crate::domain::{Approval, ApprovalStatus, Decision};

pub async fn list(remote: &Remote, all: bool, json: bool) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let path = if all { "/api/v1/approvals" } else { "/api/v1/approvals?status=pending" };
    // Every page: past 500 approvals, none is left out.
    let page = Page { items: all_pages::<Approval>(&client, path).await?, next_cursor: None, pruned_at: None };
    if json {
        print_json(&page.items)?;
        return Ok(Outcome::Done);
    }
    if !all {
        // What waits is shown whole: the title and every detail, before any decision.
        if page.items.is_empty() {
            println!("no approval is waiting");
        }
        for approval in &page.items {
            print!("{}", describe(approval));
        }
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

pub async fn decide(remote: &Remote, id: i64, decision: &str, reason: Option<String>) -> anyhow::Result<Outcome> {
    let client = remote.client()?.named("cli");
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

/// An approval for a person to decide on: who asks, the whole title, every detail.
/// Text the asker wrote is shown escaped, never obeyed by the terminal.
pub fn describe(approval: &Approval) -> String {
    use crate::terminal::{escape, escape_line};
    let left = (approval.expires_at - chrono::Utc::now()).num_seconds().max(0);
    let mut text = format!(
        "approval {} — {}, asked by {} ({}), {} left, then {}\n  {}\n",
        approval.id,
        approval.status.as_str(),
        approval.asker(),
        escape_line(&approval.source),
        format_args!("{}m{:02}s", left / 60, left % 60),
        approval.default.as_str(),
        escape_line(&approval.title),
    );
    for (name, value) in approval.detail_fields() {
        let value = escape(&value);
        let mut lines = value.lines();
        text.push_str(&format!("    {}: {}\n", escape_line(&name), lines.next().unwrap_or("")));
        for line in lines {
            text.push_str(&format!("      {line}\n"));
        }
    }
    text.push('\n');
    text
}

/// Claude Code's PreToolUse hook. Always exits 0 with Claude's decision on stdout (or
/// nothing, for a tool that is not guarded).
pub async fn claude_hook(remote: &Remote, args: ClaudeHookArgs) -> anyhow::Result<Outcome> {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        answer("ask", &format!("warden could not read the hook input: {e}"));
        return Ok(Outcome::Done);
    }
    let execution_id = std::env::var("WARDEN_EXECUTION_ID").ok().and_then(|v| v.parse::<i64>().ok());
    let body = match read_hook(&input, &args.tools, args.timeout, execution_id) {
        HookInput::Unreadable(why) => {
            answer("ask", &format!("warden could not read the hook input: {why}"));
            return Ok(Outcome::Done);
        }
        HookInput::NotGuarded => return Ok(Outcome::Done),
        HookInput::Guarded(body) => body,
    };
    match ask(remote, &body, args.timeout).await {
        // Stopped (Claude's own hook timeout passed, or the user interrupted): the
        // approval was withdrawn, and nobody reads an answer any more.
        Ok(None) => {}
        Ok(Some(approval)) => {
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

/// What the hook makes of its stdin.
#[derive(Debug)]
pub enum HookInput {
    /// Not JSON (or not an object): Claude's own prompt decides.
    Unreadable(String),
    /// A tool that `--tools` does not name: no output, the call goes ahead.
    NotGuarded,
    /// The approval to ask for (`POST /api/v1/approvals` body).
    Guarded(Value),
}

/// Parses Claude's hook input (untrusted bytes) into the approval to ask for.
pub fn read_hook(input: &[u8], tools: &[String], timeout: u64, execution_id: Option<i64>) -> HookInput {
    let hook: Value = match serde_json::from_slice(input) {
        Ok(hook @ Value::Object(_)) => hook,
        Ok(other) => return HookInput::Unreadable(format!("expected a JSON object, got {other}")),
        Err(e) => return HookInput::Unreadable(e.to_string()),
    };
    let tool = hook["tool_name"].as_str().unwrap_or("").to_owned();
    if !tools.is_empty() && !tools.iter().any(|t| t == &tool) {
        return HookInput::NotGuarded;
    }
    let input = &hook["tool_input"];
    let gist = input["command"]
        .as_str()
        .or_else(|| input["file_path"].as_str())
        .or_else(|| input["url"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| input.to_string());
    let title = format!("{tool}: {gist}").split_whitespace().collect::<Vec<_>>().join(" ");
    // A long command is cut in the title only, visibly; the whole of it is in the details,
    // which every client shows before a decision.
    let length = title.chars().count();
    let title = if length > TITLE_CHARS {
        let kept: String = title.chars().take(TITLE_CHARS - 40).collect();
        format!("{kept}… (+{} characters: see details)", length - (TITLE_CHARS - 40))
    } else {
        title
    };
    HookInput::Guarded(json!({
        "title": title,
        "details": {
            "tool_name": tool,
            "tool_input": input,
            "tool_use_id": hook["tool_use_id"],
            "claude_session_id": hook["session_id"],
            "cwd": hook["cwd"],
        },
        "timeout_s": timeout,
        "source": "claude-code",
        "execution_id": execution_id,
    }))
}

/// The longest approval title the hook makes (the whole command is in the details).
const TITLE_CHARS: usize = 240;

/// Creates the approval and waits (long polls) until it is settled. When the hook is
/// stopped meanwhile (SIGTERM, SIGINT, SIGHUP), it withdraws the approval, so that no
/// later answer seems to count, and answers `None`.
async fn ask(remote: &Remote, body: &Value, timeout: u64) -> anyhow::Result<Option<Approval>> {
    use tokio::signal::unix::{signal, SignalKind};
    let client: Client = remote.client()?;
    let (mut term, mut int, mut hup) =
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::hangup())?);
    let mut approval: Approval = client.post("/api/v1/approvals", body).await?;
    let id = approval.id;
    let wait = async {
        // The arbiter expires it at the deadline; wait a little past that for the answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(timeout + 10);
        while approval.status == ApprovalStatus::Pending && std::time::Instant::now() < deadline {
            let wait = deadline.saturating_duration_since(std::time::Instant::now()).as_secs().clamp(1, 300);
            approval = client.get(&format!("/api/v1/approvals/{id}?wait={wait}")).await?;
        }
        anyhow::Ok(approval)
    };
    tokio::select! {
        settled = wait => settled.map(Some),
        _ = term.recv() => withdraw(&client, id).await,
        _ = int.recv() => withdraw(&client, id).await,
        _ = hup.recv() => withdraw(&client, id).await,
    }
}

/// Withdraws the hook's approval as it is stopped (within a couple of seconds).
async fn withdraw(client: &Client, id: crate::domain::ApprovalId) -> anyhow::Result<Option<Approval>> {
    let path = format!("/api/v1/approvals/{id}");
    let _ = tokio::time::timeout(Duration::from_secs(2), client.delete::<Approval>(&path)).await;
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_guarded_tool_call_becomes_an_approval_titled_after_its_gist() {
        let input = br#"{"tool_name":"Bash","tool_input":{"command":"rm  -rf\nbuild"},"session_id":"s"}"#;
        let HookInput::Guarded(body) = read_hook(input, &["Bash".into()], 55, Some(7)) else { panic!() };
        assert_eq!(body["title"], "Bash: rm -rf build");
        assert_eq!((body["timeout_s"].as_u64(), body["execution_id"].as_i64()), (Some(55), Some(7)));
        assert!(matches!(read_hook(input, &["Write".into()], 55, None), HookInput::NotGuarded));
        assert!(matches!(read_hook(b"[1]", &[], 55, None), HookInput::Unreadable(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Whatever Claude (or anything else) writes on stdin, the hook neither panics
        /// nor asks with a title the daemon would refuse.
        #[test]
        fn any_hook_input_is_read_or_refused_cleanly(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            tool in ".{0,300}",
            command in ".{0,300}",
        ) {
            let _ = read_hook(&bytes, &[], 55, None);
            let json = serde_json::json!({ "tool_name": tool, "tool_input": { "command": command } }).to_string();
            match read_hook(json.as_bytes(), &[], 55, None) {
                HookInput::Guarded(body) => {
                    let title = body["title"].as_str().unwrap();
                    prop_assert!(!title.trim().is_empty() && title.chars().count() <= TITLE_CHARS);
                }
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
