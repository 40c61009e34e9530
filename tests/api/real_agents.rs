//! The real agents as warden executions: the Claude Code CLI, the Codex CLI and the
//! Gemini CLI (from npm, installed by scripts/test-deps.sh into tests/agents) run through their ready
//! profiles against local mocks of their model APIs (`model_mocks.rs`). warden must
//! show what they did as it happens (agent events, transcript, tokens, cost), route
//! Claude's tool call through `warden hook claude` to an approval, and resume each
//! agent's own conversation in a session's next turn.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::model_mocks::*;

/// Where the real agent CLIs are; the suite's dependencies put them there.
fn agents_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents/node_modules/.bin");
    for agent in ["claude", "codex", "gemini"] {
        assert!(
            bin.join(agent).exists(),
            "{agent} is not installed in {}: run `make test` (scripts/test-deps.sh)",
            bin.display()
        );
    }
    bin
}

/// A daemon (the real binary) whose agents find the real CLIs on PATH and talk to the
/// mock model API; each agent gets a fresh home of its own.
struct AgentRig {
    daemon: ServeProcess,
    workspace: PathBuf,
    agent_home: PathBuf,
    _dir: tempfile::TempDir,
}

impl AgentRig {
    async fn start(env: &[(&str, String)]) -> AgentRig {
        // Outside /tmp: the sandbox keeps agents from making files beside the data dir,
        // and Claude Code makes its own in /tmp.
        let dir = tempfile::tempdir_in(outside_scratch_dirs()).unwrap();
        let workspace = dir.path().join("project");
        let agent_home = dir.path().join("agent-home");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::create_dir_all(&agent_home).unwrap();
        let path = format!("{}:{}", agents_bin().display(), std::env::var("PATH").unwrap_or_default());
        let home = agent_home.display().to_string();
        let mut all: Vec<(&str, &str)> = vec![("PATH", &path), ("HOME", &home)];
        all.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
        let daemon = ServeProcess::start_with_env(&dir.path().join("warden"), &all).await;
        AgentRig { daemon, workspace, agent_home, _dir: dir }
    }

    async fn run(&self, profile: &str, prompt: &str) -> Value {
        self.daemon.exec_with(json!({"profile": profile, "prompt": prompt, "cwd": self.workspace})).await
    }

    /// Runs the profile's agent on a prompt to its end; it must succeed and answer.
    async fn run_to_end(&self, profile: &str, format: &str) -> Value {
        let created = self.run(profile, "run a greeting").await;
        let done = self.daemon.wait_final(&created["id"]).await;
        assert_eq!(done["status"], "succeeded", "{}", self.daemon.output_text(&created["id"]).await);
        assert_eq!(done["agent"]["format"], format);
        assert_eq!(done["agent"]["result"]["text"], "All done: hello.");
        done
    }

    /// A two-turn session: the second turn must resume the agent's own conversation
    /// (`flag` then its id in its argv) and the model must have seen the first turn.
    /// Returns the session and the second turn's execution.
    async fn resumes_in_a_session(&self, profile: &str, flag: &str) -> (Value, Value) {
        let (session, replies) =
            self.chat(profile, &["remember the word tangerine", "what was my first message?"]).await;
        assert_eq!(replies[0]["content"], "You have said 1 thing(s); the first was: remember the word tangerine");
        assert_eq!(replies[1]["content"], "You have said 2 thing(s); the first was: remember the word tangerine");
        let first = self.daemon.execution(&replies[0]["execution_id"]).await;
        let second = self.daemon.execution(&replies[1]["execution_id"]).await;
        let conversation = first["agent"]["agent_session_id"].as_str().expect("the agent named its conversation");
        let argv: Vec<&str> = second["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert!(argv.windows(2).any(|w| w == [flag, conversation]), "{argv:?}");
        assert_eq!(session["agent_session_id"], conversation);
        (session, second)
    }

    async fn transcript(&self, id: &Value) -> Vec<Value> {
        self.daemon.get_ok(&format!("/api/v1/executions/{id}/transcript?limit=500")).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// A session's agent replies, once there are `n`.
    async fn replies(&self, session: &Value, n: usize) -> Vec<Value> {
        wait_until(&format!("{n} agent replies"), Duration::from_secs(90), || async {
            let messages = self.daemon.get_ok(&format!("/api/v1/sessions/{session}/messages?limit=50")).await;
            let replies: Vec<Value> =
                messages["items"].as_array().unwrap().iter().filter(|m| m["role"] == "agent").cloned().collect();
            (replies.len() >= n).then_some(replies)
        })
        .await
    }

    async fn chat(&self, profile: &str, prompts: &[&str]) -> (Value, Vec<Value>) {
        let session = expect_json(
            self.daemon.post("/api/v1/sessions", &json!({"profile": profile, "cwd": self.workspace})).await,
            StatusCode::CREATED,
        )
        .await;
        let id = session["id"].clone();
        for prompt in prompts {
            expect_json(
                self.daemon.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": prompt})).await,
                StatusCode::ACCEPTED,
            )
            .await;
        }
        let replies = self.replies(&id, prompts.len()).await;
        (self.daemon.get_ok(&format!("/api/v1/sessions/{id}")).await, replies)
    }
}

fn kinds(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[actix_web::test]
async fn claude_code_runs_with_its_tool_call_approved_through_warden_and_shows_what_it_did() {
    let model = MockModel::anthropic().await;
    let rig = AgentRig::start(&[
        ("ANTHROPIC_BASE_URL", model.url.clone()),
        ("ANTHROPIC_API_KEY", "sk-ant-test".into()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
    ])
    .await;
    // The project asks warden before each Bash call.
    let hook = format!("{} hook claude --tools Bash --timeout 60", warden_bin().display());
    std::fs::create_dir_all(rig.workspace.join(".claude")).unwrap();
    std::fs::write(
        rig.workspace.join(".claude/settings.json"),
        json!({"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": hook, "timeout": 70}]}]}})
            .to_string(),
    )
    .unwrap();

    let created = rig.run("claude", "run a greeting").await;
    let id = created["id"].clone();
    // Claude's Bash call waits for a human, through the hook and the agent's token.
    let approval = wait_until("Claude's Bash call to ask", Duration::from_secs(60), || async {
        let pending = rig.daemon.get_ok("/api/v1/approvals?status=pending").await;
        pending["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(approval["title"], "Bash: echo hello-from-tool");
    assert_eq!(approval["execution_id"], id);
    assert_eq!(approval["kind"], "agent");
    // Meanwhile the transcript already shows the call.
    let so_far = rig.transcript(&id).await;
    assert_eq!(kinds(&so_far).last(), Some(&"agent.tool_call"), "{so_far:?}");
    let running = rig.daemon.execution(&id).await;
    assert_eq!((running["status"].as_str(), running["agent"]["tool_calls"].as_u64()), (Some("running"), Some(1)));
    let decided = rig
        .daemon
        .request(Method::POST, &format!("/api/v1/approvals/{}", approval["id"]))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::OK);

    let done = rig.daemon.wait_final(&id).await;
    assert_eq!(done["status"], "succeeded", "{}", rig.daemon.output_text(&id).await);
    let agent = &done["agent"];
    assert_eq!(agent["format"], "claude-stream-json");
    assert_eq!(agent["result"]["text"], "All done: hello.");
    assert_eq!(agent["result"]["is_error"], false);
    assert_eq!((agent["turns"].as_u64(), agent["tool_calls"].as_u64()), (Some(2), Some(1)));
    // The tokens are what the model reported for its two responses, as Claude summed them.
    assert_eq!(
        agent["tokens"],
        json!({"input": 2 * INPUT_TOKENS, "output": 2 * OUTPUT_TOKENS,
               "cache_read": 2 * CACHE_READ_TOKENS, "cache_write": 2 * CACHE_WRITE_TOKENS})
    );
    let cost = agent["cost_usd"].as_f64().expect("Claude reports its cost");
    assert!(cost > 0.0 && agent["result"]["cost_usd"].as_f64() == Some(cost), "{agent}");
    assert_eq!(agent["agent_session_id"].as_str().map(str::len), Some(36));

    let entries = rig.transcript(&id).await;
    assert_eq!(kinds(&entries), CLAUDE_TOOL_RUN);
    assert_eq!(entries[2]["data"]["tool"], "Bash");
    assert_eq!(entries[3]["data"]["ok"], true, "{entries:#?}");
    assert!(entries[3]["data"]["summary"].as_str().unwrap().contains("hello-from-tool"), "{}", entries[3]);
    // The model saw the tool's result: the call really ran.
    assert!(model.requests().iter().any(|(_, body)| body.to_string().contains("hello-from-tool\\n")
        || body.to_string().contains("\"content\":\"hello-from-tool\"")));

    // A two-turn session resumes Claude's own conversation.
    let (session, second) = rig.resumes_in_a_session("claude", "--resume").await;
    assert_eq!(second["agent"]["agent_session_id"], session["agent_session_id"]);
    assert!(rig.agent_home.join(".claude").is_dir(), "Claude kept its state in its own home");
}

#[actix_web::test]
async fn codex_runs_its_command_and_resumes_its_thread_in_a_session() {
    let model = MockModel::openai().await;
    let rig = AgentRig::start(&[("MOCK_OPENAI_KEY", "sk-test".into())]).await;
    // Codex reads its provider from its own config.
    let codex_home = rig.agent_home.join(".codex");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"gpt-mock\"\nmodel_provider = \"mock\"\n\n[model_providers.mock]\nname = \"mock\"\n\
             base_url = \"{}/v1\"\nenv_key = \"MOCK_OPENAI_KEY\"\nwire_api = \"responses\"\n",
            model.url
        ),
    )
    .unwrap();

    let done = rig.run_to_end("codex", "codex-json").await;
    let agent = &done["agent"];
    assert_eq!(agent["tool_calls"], 1, "{:#?}", model.requests().last().map(|(_, b)| b["input"].clone()));
    // Codex counts cached input inside its input tokens; warden's `input` does not.
    assert_eq!(
        agent["tokens"],
        json!({"input": 2 * (INPUT_TOKENS - CACHE_READ_TOKENS), "output": 2 * OUTPUT_TOKENS,
               "cache_read": 2 * CACHE_READ_TOKENS, "cache_write": 0})
    );
    assert_eq!(agent["cost_usd"], Value::Null, "Codex reports no cost");
    let entries = rig.transcript(&done["id"]).await;
    assert_eq!(kinds(&entries), TOOL_RUN);
    assert_eq!(entries[1]["data"]["tool"], "shell");
    assert!(entries[1]["data"]["input"]["command"].as_str().unwrap().contains("echo hello-from-tool"));
    assert_eq!(entries[2]["data"]["ok"], true);
    assert!(entries[2]["data"]["summary"].as_str().unwrap().contains("hello-from-tool"));

    let (_, second) = rig.resumes_in_a_session("codex", "resume").await;
    // The resumed turn counts only its own tokens, though Codex reports the thread's.
    assert_eq!(second["agent"]["tokens"]["output"], OUTPUT_TOKENS, "{}", second["agent"]);
}

#[actix_web::test]
async fn gemini_cli_runs_its_command_and_resumes_its_session() {
    let model = MockModel::gemini().await;
    let rig = AgentRig::start(&[
        ("GEMINI_API_KEY", "gm-test".into()),
        ("GOOGLE_GEMINI_BASE_URL", model.url.clone()),
        ("GEMINI_CLI_TRUST_WORKSPACE", "true".into()),
    ])
    .await;
    // Its API key, and `echo` allowed without asking (headless, nobody could answer).
    let settings = rig.agent_home.join(".gemini");
    std::fs::create_dir_all(&settings).unwrap();
    std::fs::write(
        settings.join("settings.json"),
        json!({"security": {"auth": {"selectedType": "gemini-api-key"}}, "tools": {"allowed": ["run_shell_command(echo)"]}})
            .to_string(),
    )
    .unwrap();

    let done = rig.run_to_end("gemini", "gemini-stream-json").await;
    let agent = &done["agent"];
    assert_eq!(agent["tool_calls"], 1);
    // Every model call the CLI made (its helper calls too) is in its totals.
    let calls = model.requests().iter().filter(|(path, _)| path.contains("enerateContent")).count() as u64;
    assert_eq!(agent["tokens"]["output"], calls * OUTPUT_TOKENS, "{agent}");
    assert_eq!(agent["tokens"]["cache_read"], calls * CACHE_READ_TOKENS);
    let entries = rig.transcript(&done["id"]).await;
    assert_eq!(kinds(&entries), TOOL_RUN);
    assert_eq!(entries[1]["data"]["tool"], "run_shell_command");
    assert_eq!(
        entries[2]["data"],
        json!({"call_id": entries[1]["data"]["call_id"], "ok": true, "summary": "hello-from-tool"})
    );

    rig.resumes_in_a_session("gemini", "--resume").await;
}
