//! The command line, as clap derive types; the doc comments are the `--help` text.

use std::path::PathBuf;

use crate::domain::SessionId;
use clap::{Args, Parser, Subcommand};

/// warden runs and supervises AI coding-agent executions (or any command) in your
/// workspaces, and lets you watch and steer them from any client.
#[derive(Debug, Parser)]
#[command(name = "warden", version, propagate_version = true)]
pub struct Cli {
    /// Data dir (database, token, logs, config.toml). Default: $XDG_DATA_HOME/warden
    /// or ~/.local/share/warden.
    #[arg(long, env = "WARDEN_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The daemon's URL (default: read from the data dir's server.json).
    #[arg(long, env = "WARDEN_URL", global = true, value_name = "URL")]
    pub url: Option<String>,

    /// The API token (default: read from the data dir's token file).
    #[arg(long, env = "WARDEN_TOKEN", global = true, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the daemon in the background and wait until it answers.
    Start(ServeArgs),
    /// Run the daemon in the foreground (Ctrl-C or SIGTERM stops it gracefully).
    Serve(ServeArgs),
    /// Stop the running daemon gracefully and wait until it is gone.
    Stop,
    /// Is the daemon running? Exit 0 when it is, 3 when it is not.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a prompt with a profile (default: the `shell` profile, `sh -c PROMPT`).
    Exec(ExecArgs),
    /// The live terminal dashboard: executions, approvals, output (? for its keys).
    Dash,
    /// Print the web dashboard's URL (with the token in its fragment) and open it in a
    /// browser where the system has an opener.
    Open {
        /// Only print the URL.
        #[arg(long)]
        no_browser: bool,
    },
    /// Check what breaks warden in the field: data dir and token modes, config, the
    /// daemon, the sandbox, git, disk space, the database, agent programs. Exit 1 when
    /// something fails.
    Doctor {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A service that comes back: a systemd user unit (Linux) or launchd agent (macOS)
    /// that restarts the daemon after a crash.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Notifications (`[[notify]]` in config.toml).
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Print a completion script for a shell, e.g. `warden completions bash >
    /// ~/.local/share/bash-completion/completions/warden`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `warden man > ~/.local/share/man/man1/warden.1`.
    Man,
    /// List executions, newest first.
    Ls {
        /// Only these statuses (comma-separated, e.g. queued,running).
        #[arg(long)]
        status: Option<String>,
        /// How many at most.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one execution.
    Show {
        id: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an execution's whole output (stdout lines to stdout, stderr lines to stderr).
    Logs {
        id: i64,
        /// Keep following the output until the execution ends.
        #[arg(short, long)]
        follow: bool,
        /// Write the lines as they are. Without it, on a terminal, control sequences
        /// other than colours are shown escaped (`\e]0;…`), never obeyed.
        #[arg(long)]
        raw: bool,
        /// The agent's transcript instead of the raw output: its messages, tool calls
        /// and their results, and how it ended (for a profile with an agent `format`).
        #[arg(long, conflicts_with = "raw")]
        transcript: bool,
    },
    /// What an execution changed in its git work tree: the diff, or a summary (--stat).
    /// While it runs, compared with the working tree now.
    Diff {
        id: i64,
        /// Only this file (its new or old path).
        #[arg(long)]
        path: Option<String>,
        /// One line per changed file with its counts, and the totals.
        #[arg(long)]
        stat: bool,
        /// Lines of context around each change.
        #[arg(short = 'U', long, default_value_t = 3)]
        context: u32,
        /// Colour: auto (when writing to a terminal), always or never.
        #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
        color: ColorChoice,
    },
    /// Print events as they happen (reconnects and resumes on its own).
    Events {
        /// Comma-separated types: exact, prefix.* or * (default).
        #[arg(long)]
        topics: Option<String>,
        /// First replay stored events after this seq.
        #[arg(long)]
        since: Option<u64>,
        /// Print each event's JSON envelope.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running execution.
    Cancel { id: i64 },
    /// Pause a running execution (SIGSTOP to its process group).
    Pause { id: i64 },
    /// Resume a paused execution.
    Resume { id: i64 },
    /// Run an ended execution's request again.
    Retry { id: i64 },
    /// Delete final executions: their rows, output, events and worktrees (their branches
    /// stay). A replay across them says they were removed.
    Rm {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
    /// Run a retention pass now ([retention] in config.toml) and say what it freed:
    /// the output and events of old final executions, snapshot objects, worktrees.
    Prune {
        /// Only say what it would free.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply an isolated execution's work onto this work tree (uncommitted, 3-way; all or nothing).
    Apply { id: i64 },
    /// Merge an isolated execution's work into a branch as a commit (nothing is checked
    /// out; a checkout of that branch follows unless your uncommitted changes are in the way).
    Merge {
        id: i64,
        /// The branch to merge into (default: the branch its base came from).
        #[arg(long)]
        into: Option<String>,
        /// One commit with its work on top of the branch.
        #[arg(long, conflicts_with = "no_squash")]
        squash: bool,
        /// A merge commit of both branches (only when its base is in the branch's history).
        #[arg(long)]
        no_squash: bool,
        /// The commit message.
        #[arg(short, long)]
        message: Option<String>,
    },
    /// Discard an isolated execution's work: remove its worktree and its branch.
    Discard { id: i64 },
    /// List approvals waiting for a decision (all of them with --all).
    Approvals {
        /// Also decided, expired and cancelled ones.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending approval (exit 1 if another answer won first).
    Approve {
        id: i64,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending approval (exit 1 if another answer won first).
    Deny {
        id: i64,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Conversations with an agent: each message is a turn (an execution).
    #[command(subcommand)]
    Session(SessionCommand),
    /// Talk with an agent in this terminal: type a message, read the reply, repeat;
    /// Ctrl-D ends (the session is kept).
    Chat(ChatArgs),
    /// Hooks that let agents ask warden for approval.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Manage workspaces: the directories executions run in.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Show the profiles: how agents are run.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Show and set providers: the capacity pools executions share.
    #[command(subcommand)]
    Provider(ProviderCommand),
}

#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// Profile to run with.
    #[arg(long, short)]
    pub profile: Option<String>,
    /// Workspace (name or id) to run in.
    #[arg(long, short, conflicts_with = "cwd")]
    pub workspace: Option<String>,
    /// Directory to run in (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Seconds of running before it is killed.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Run in a git worktree of its own, on a branch of its own (`warden discard` removes it).
    #[arg(long)]
    pub isolated: bool,
    /// With --isolated: the revision its branch starts from (default: the work tree as
    /// it is, uncommitted and untracked files included).
    #[arg(long, requires = "isolated", value_name = "REF")]
    pub base: Option<String>,
    /// Print the output until it ends, then exit with the execution's exit code.
    #[arg(long, short)]
    pub follow: bool,
    /// Print JSON (the created execution).
    #[arg(long)]
    pub json: bool,
    /// The prompt; several words are joined with spaces.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub prompt: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on (default 7373; a busy port falls back to a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (default 127.0.0.1).
    #[arg(long)]
    pub host: Option<String>,
    /// Allow listening on a non-loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Write the log to this file, rotated by size (`warden start` passes its warden.log).
    #[arg(long, hide = true)]
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SessionTarget {
    /// Profile to talk to.
    #[arg(long, short)]
    pub profile: Option<String>,
    /// Workspace (name or id).
    #[arg(long, short, conflicts_with = "cwd")]
    pub workspace: Option<String>,
    /// Directory (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// A title for the session.
    #[arg(long)]
    pub title: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session; prints its id.
    New {
        #[command(flatten)]
        target: SessionTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List sessions, newest first.
    Ls {
        /// Only this status (idle, running, closed).
        #[arg(long)]
        status: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send a message (it runs as the session's next turn).
    Send {
        id: SessionId,
        /// The message; several words are joined with spaces.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        message: Vec<String>,
        /// Wait for the turn and print the agent's output as it comes.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print a session's transcript.
    Show {
        id: SessionId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Close a session (its running turn is cancelled; the transcript is kept).
    Close { id: SessionId },
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub target: SessionTarget,
    /// Go on with this session instead of starting one.
    #[arg(long)]
    pub session: Option<SessionId>,
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Claude Code PreToolUse hook: reads the hook JSON on stdin, asks warden, prints
    /// Claude's permission decision.
    Claude(ClaudeHookArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ClaudeHookArgs {
    /// Only these tools ask (comma-separated, e.g. Bash,Write,Edit); others pass
    /// through with no output. Default: every tool asks.
    #[arg(long, value_delimiter = ',')]
    pub tools: Vec<String>,
    /// Seconds to wait for a human; then the approval's default (deny) applies. Keep it
    /// about 10 s shorter than Claude's own hook `timeout` (which defaults to 600 s), so
    /// the default is answered before Claude stops the hook.
    #[arg(long, default_value_t = 590, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// When warden cannot be reached: `ask` lets Claude's own prompt decide, `deny`
    /// refuses the tool call.
    #[arg(long, value_enum, default_value_t = OnError::Ask)]
    pub on_error: OnError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    Ask,
    Deny,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Register a directory as a workspace.
    Add {
        name: String,
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List workspaces.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget a workspace (its directory is left alone).
    Rm {
        /// Name or id.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// List profiles.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one profile.
    Show {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// List providers with their limits and live usage.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set a provider's limits (applies to its queue at once). Limits left out stay as
    /// they are.
    #[command(group(clap::ArgGroup::new("limit").required(true).multiple(true)))]
    Set {
        name: String,
        /// Executions at once; 0 = unlimited.
        #[arg(long, group = "limit")]
        max_concurrent: Option<u32>,
        /// Starts per minute; 0 = unlimited.
        #[arg(long, group = "limit")]
        rate_per_minute: Option<u32>,
        /// Dollars its agents may spend a UTC day before new starts wait; `none` removes
        /// the budget.
        #[arg(long, group = "limit", value_parser = budget::<f64>)]
        max_cost_usd_per_day: Option<Budget<f64>>,
        /// Tokens its agents may use a UTC day before new starts wait; `none` removes it.
        #[arg(long, group = "limit", value_parser = budget::<u64>)]
        max_tokens_per_day: Option<Budget<u64>>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the service file for this binary and data dir, and print the one command
    /// that enables it.
    Install,
    /// Remove the service file (and print how to stop the service).
    Uninstall,
    /// Whether the service file is there and current, and what the service manager
    /// says (exit 3 when it is not installed).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test notification to every target now and say how each went; exit 1
    /// when one failed.
    Test {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A daily budget on the command line: a number, or `none` for no budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget<T>(pub Option<T>);

fn budget<T: std::str::FromStr>(text: &str) -> Result<Budget<T>, String> {
    if text == "none" {
        return Ok(Budget(None));
    }
    text.parse().map(|n| Budget(Some(n))).map_err(|_| format!("{text:?} is not a number (or none)"))
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}
