//! Integration tests: each test starts a real daemon on 127.0.0.1:0 with a temp data dir
//! and talks to it over HTTP, or runs the real `warden` binary.

mod helpers;

mod agents;
mod approvals;
mod auth;
mod catalog;
mod changes;
mod cli;
mod contract;
mod dashboards;
mod errors;
mod executions;
mod faults;
mod fuzz;
mod idempotency;
mod isolation;
mod lifecycle;
mod live;
mod metrics;
mod model_mocks;
mod notify;
mod openapi;
mod queueing;
mod real_agents;
mod retention;
mod sessions;
mod supervision;
mod trust;
mod web;
