//! `GET /health` (no token) and `GET /api/v1/status`: is the daemon up, and what is it.

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::ApiError;
use crate::actors::notifier::{Notifier, SendTest, TestResult};
use crate::actors::retention::{Prune, Retention};
use crate::actors::supervisor::{GetStatus, Status, Supervisor};

#[derive(Serialize, serde::Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    pub version: String,
}

/// Liveness; needs no token.
#[utoipa::path(get, path = "/health", operation_id = "getHealth", tag = "system", security(()),
    responses((status = 200, body = Health)))]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() })
}

/// Version, pid, uptime, data dir, URL and counts.
#[utoipa::path(get, path = "/api/v1/status", operation_id = "getStatus", tag = "system",
    responses((status = 200, body = Status), (status = 401, body = super::problem::Problem)))]
pub async fn status(supervisor: web::Data<Addr<Supervisor>>) -> Result<HttpResponse, ApiError> {
    let status = supervisor.send(GetStatus).await??;
    Ok(HttpResponse::Ok().json(status))
}

/// Sends one test notification to every `[[notify]]` target now and says how each went
/// (`warden notify test`).
#[utoipa::path(post, path = "/api/v1/notify/test", operation_id = "testNotifications", tag = "system",
    responses((status = 200, body = Vec<TestResult>), (status = 401, body = super::problem::Problem)))]
pub async fn notify_test(notifier: web::Data<Addr<Notifier>>) -> Result<HttpResponse, ApiError> {
    let results = notifier.send(SendTest).await?;
    Ok(HttpResponse::Ok().json(results))
}

/// `?dry_run=` for `POST /api/v1/prune`.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PruneQuery {
    /// Only say what a pass would free.
    pub dry_run: Option<bool>,
}

/// Runs a retention pass now (or waits for the one running) and says what it freed;
/// with `dry_run=true`, what it would free (`warden prune [--dry-run]`).
#[utoipa::path(post, path = "/api/v1/prune", operation_id = "prune", tag = "system", params(PruneQuery),
    responses((status = 200, body = crate::domain::PruneReport), (status = 400, body = super::problem::Problem),
              (status = 401, body = super::problem::Problem)))]
pub async fn prune(
    retention: web::Data<Addr<Retention>>,
    query: web::Query<PruneQuery>,
) -> Result<HttpResponse, ApiError> {
    let report = retention.send(Prune { dry_run: query.dry_run.unwrap_or(false) }).await??;
    Ok(HttpResponse::Ok().json(report))
}
