//! The ready profiles: `claude`, `codex` and `gemini` exist without any config (a
//! config file profile of the same name wins), each reading its agent's JSON stream and
//! resuming the agent's own conversation (`{agent_session_id}`) in a session's next
//! turn. The config loader adds them beside the built-in `shell`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::domain::{AgentFormat, ApprovalPolicy, Isolation, Origin, Profile, ProfileSpec, SandboxMode};

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn ready(name: &str, provider: &str, format: AgentFormat, command: &[&str], continue_command: &[&str]) -> Profile {
    Profile {
        name: name.into(),
        spec: ProfileSpec {
            provider: provider.into(),
            command: argv(command),
            continue_command: Some(argv(continue_command)),
            approval: ApprovalPolicy::Never,
            timeout_s: None,
            env: BTreeMap::new(),
            sandbox: SandboxMode::default(),
            isolation: Isolation::None,
            format,
        },
        origin: Origin::Builtin,
    }
}

/// The ready agent profiles. Flags as each CLI documents them: Claude Code's
/// `-p --output-format stream-json --verbose` and `--resume <session id>`; Codex's
/// `exec --json` and `exec resume <thread id>`; Gemini CLI's `--output-format
/// stream-json` and `--resume <session id>`. Codex's own sandbox is off
/// (`danger-full-access`): it is made with bubblewrap, whose mount namespace a process
/// under warden's Landlock sandbox may not make, so every command it ran would fail;
/// warden's sandbox confines it instead (`sandbox = "workspace-write"` on a profile of
/// your own keeps its writes in the work tree). Each was run for real against a mock of
/// its model API (`tests/api/real_agents.rs`).
pub fn ready_profiles() -> Vec<Profile> {
    vec![
        ready(
            "claude",
            "anthropic",
            AgentFormat::ClaudeStreamJson,
            &["claude", "-p", "--output-format", "stream-json", "--verbose", "--", "{prompt}"],
            &[
                "claude",
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--resume",
                "{agent_session_id}",
                "--",
                "{prompt}",
            ],
        ),
        ready(
            "codex",
            "openai",
            AgentFormat::CodexJson,
            &["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox", "danger-full-access", "--", "{prompt}"],
            &[
                "codex",
                "exec",
                "--json",
                "--skip-git-repo-check",
                "--sandbox",
                "danger-full-access",
                "resume",
                "{agent_session_id}",
                "--",
                "{prompt}",
            ],
        ),
        ready(
            "gemini",
            "google",
            AgentFormat::GeminiStreamJson,
            &["gemini", "--output-format", "stream-json", "--prompt={prompt}"],
            &["gemini", "--output-format", "stream-json", "--resume", "{agent_session_id}", "--prompt={prompt}"],
        ),
    ]
}

/// Whether a profile's program can be run: a path that exists, or a name found on the
/// daemon's PATH (which its agents inherit).
pub fn program_installed(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
