//! warden: a local daemon that runs and supervises AI coding-agent executions (or any
//! command) in a developer's workspaces, and lets any client watch and steer them.
//!
//! # Layout
//!
//! - [`daemon`] builds one running warden: PID lock, store, actors, HTTP server.
//! - [`actors`] hold all mutable state, one actor per concern: the `Supervisor` starts
//!   the others and owns shutdown; the `Catalog` owns workspaces and profiles; the
//!   `ExecutionMonitor` owns providers and the executions that are not final (their
//!   lifecycle is one pure state machine); the `ApprovalArbiter` owns approvals; the
//!   `ClientRegistry` owns connected clients and fans events out to them; the
//!   `SessionKeeper` owns conversations (sessions) and their turns; the `ChangeTracker`
//!   snapshots git work trees and answers what an execution changed; one `WsClient`
//!   per WebSocket client.
//! - [`store`] is SQLite: one writer thread with group commit (it also assigns event
//!   `seq`s inside the commit), pooled readers.
//! - [`http`] is the API: thin handlers that send one message to an actor.
//! - [`cli`], [`commands`] and [`client`] are the `warden` command and its HTTP client;
//!   [`dash`] is the terminal dashboard (`warden dash`), and `web/` holds the browser
//!   dashboard the daemon serves at `/`; [`terminal`] makes agent-written text safe to
//!   print.
//! - [`agent`] reads the JSON streams of the agents warden knows (Claude Code, Codex,
//!   Gemini CLI) into agent events and a summary, and holds their ready profiles.
//! - [`credentials`] and [`sandbox`] are the trust boundary: the owner token and one
//!   agent token per execution, and the Landlock confinement of agent processes.
//! - [`config`], [`home`] and [`domain`] are the settings, the data dir and the nouns;
//!   [`metrics`], [`logfile`] and [`memory`] keep the daemon observable and small.

pub mod actors;
pub mod agent;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod dash;
pub mod domain;
pub mod home;
pub mod http;
pub mod logfile;
pub mod memory;
pub mod metrics;
pub mod sandbox;
pub mod store;
pub mod terminal;
