//! The actors of warden, one file (or folder) each with its messages beside it. The
//! Supervisor starts the others and hands their addresses to the HTTP layer.

pub mod approval_arbiter;
pub mod catalog;
pub mod change_tracker;
pub mod client_registry;
pub mod execution_monitor;
pub mod notifier;
pub mod retention;
pub mod session_keeper;
pub mod supervisor;
pub mod ws_client;
