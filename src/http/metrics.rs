//! `GET /metrics` (token required): Prometheus text format. Counters and histograms come
//! from `crate::metrics`; gauges from their owners (the Supervisor's status, the
//! ExecutionMonitor's providers) and counts by status from the database.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use actix::Addr;
use actix_web::{web, HttpResponse};

use super::problem::ApiError;
use crate::actors::execution_monitor::{ExecutionMonitor, ListProviders};
use crate::actors::supervisor::{GetStatus, Supervisor};
use crate::metrics::{label, metrics};
use crate::store::{approvals, executions, Store};

/// Prometheus metrics of this daemon.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 401, body = super::problem::Problem)))]
pub async fn metrics_text(
    supervisor: web::Data<Addr<Supervisor>>,
    monitor: web::Data<Addr<ExecutionMonitor>>,
    store: web::Data<Store>,
) -> Result<HttpResponse, ApiError> {
    let status = supervisor.send(GetStatus).await??;
    let providers = monitor.send(ListProviders).await?;
    let (by_status, approvals_by_status) = store
        .read("count for metrics", |c| {
            Ok((executions::count_by_status_and_provider(c)?, approvals::count_by_status(c)?))
        })
        .await?;

    let m = metrics();
    let mut out = String::new();
    let provider = |name: &str| format!("provider=\"{}\"", label(name));
    family(
        &mut out,
        "warden_executions",
        "gauge",
        "Executions stored, by status and provider.",
        by_status.iter().map(|(s, p, n)| (format!("status=\"{}\",{}", label(s), provider(p)), *n)),
    );
    family(
        &mut out,
        "warden_provider_running",
        "gauge",
        "Executions running (or paused) now, by provider.",
        providers.iter().map(|p| (provider(&p.name), p.running as u64)),
    );
    family(
        &mut out,
        "warden_provider_queued",
        "gauge",
        "Executions waiting in the provider's queue.",
        providers.iter().map(|p| (provider(&p.name), p.queued as u64)),
    );
    family(
        &mut out,
        "warden_provider_max_concurrent",
        "gauge",
        "The provider's concurrency limit (0: none).",
        providers.iter().map(|p| (provider(&p.name), p.limits.max_concurrent as u64)),
    );
    family(
        &mut out,
        "warden_provider_spend_usd_today",
        "gauge",
        "Dollars the provider's agents reported spending this UTC day.",
        providers.iter().map(|p| (provider(&p.name), p.spend_today.cost_usd)),
    );
    family(
        &mut out,
        "warden_provider_tokens_today",
        "gauge",
        "Tokens the provider's agents used this UTC day, by kind (input counts cached input too).",
        providers.iter().flat_map(|p| {
            [("input", p.spend_today.input_tokens), ("output", p.spend_today.output_tokens)]
                .map(|(kind, n)| (format!("{},kind=\"{kind}\"", provider(&p.name)), n))
        }),
    );
    family(
        &mut out,
        "warden_provider_budget_reached",
        "gauge",
        "1 while the provider's daily budget holds its new starts.",
        providers.iter().map(|p| (provider(&p.name), u64::from(p.budget_reached))),
    );
    m.start_latency.render(
        &mut out,
        "warden_execution_start_seconds",
        "From an execution's creation to its process start.",
    );
    family(
        &mut out,
        "warden_approvals",
        "gauge",
        "Approvals stored, by status (pending, approved, denied, expired, cancelled).",
        approvals_by_status.iter().map(|(s, n)| (format!("status=\"{}\"", label(s)), *n)),
    );
    let clients = &status.counts.clients;
    for (name, kind, help, value) in [
        ("warden_clients_connected", "gauge", "WebSocket and SSE clients connected now.", clients.connected as u64),
        ("warden_events_published_total", "counter", "Events published to live clients.", clients.events_published),
        (
            "warden_events_skipped_total",
            "counter",
            "Low-priority events skipped for congested clients.",
            clients.events_skipped,
        ),
        (
            "warden_clients_dropped_total",
            "counter",
            "Clients disconnected for falling too far behind.",
            clients.clients_dropped,
        ),
        (
            "warden_store_commits_total",
            "counter",
            "Store commits (each a batch of writes).",
            status.counts.store.commits,
        ),
        ("warden_store_writes_total", "counter", "Writes committed by the store.", status.counts.store.writes),
        ("warden_uptime_seconds", "gauge", "Seconds since the daemon started.", status.uptime_s),
    ] {
        family(&mut out, name, kind, help, std::iter::once((String::new(), value)));
    }
    m.commit_latency.render(&mut out, "warden_store_commit_seconds", "One store commit.");
    m.batch_size.render(&mut out, "warden_store_batch_writes", "Writes per store commit.");
    let mut requests: Vec<(String, u16, u64)> =
        m.http_requests.iter().map(|e| (e.key().0.clone(), e.key().1, e.value().load(Ordering::Relaxed))).collect();
    requests.sort();
    family(
        &mut out,
        "warden_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
        requests.into_iter().map(|(route, code, n)| (format!("route=\"{}\",status=\"{code}\"", label(&route)), n)),
    );
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out))
}

/// One metric family: its help and type, then a sample per label set.
fn family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Iterator<Item = (String, V)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}
