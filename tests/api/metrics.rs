//! `GET /metrics`: Prometheus text with the daemon's counts, queues and latencies.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// `name{labels}` → value, for every sample line; panics on a line that is not one.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            (name.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}")))
        })
        .collect()
}

#[actix_web::test]
async fn metrics_show_executions_queues_approvals_clients_and_requests() {
    let d = spawn_for_executions().await;
    for _ in 0..2 {
        let execution = d.exec("true").await;
        d.wait_final(&execution["id"]).await;
    }
    let approval = expect_json(d.post("/api/v1/approvals", &json!({ "title": "t" })).await, StatusCode::CREATED).await;
    d.post(&format!("/api/v1/approvals/{}", approval["id"]), &json!({ "decision": "approve" })).await;
    let (_client, _) = d.ws().await;

    expect_problem(d.client.get(d.url("/metrics")).send().await.unwrap(), StatusCode::UNAUTHORIZED, "unauthorized")
        .await;
    let response = d.request(reqwest::Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let m = samples(&text);
    let at = |key: &str| *m.get(key).unwrap_or_else(|| panic!("no {key} in\n{text}"));
    assert_eq!(at(r#"warden_executions{status="succeeded",provider="local"}"#), 2.0);
    assert_eq!(at(r#"warden_provider_running{provider="local"}"#), 0.0);
    assert_eq!(at(r#"warden_provider_queued{provider="local"}"#), 0.0);
    assert_eq!(at(r#"warden_provider_max_concurrent{provider="local"}"#), 4.0);
    assert_eq!(at(r#"warden_approvals{status="approved"}"#), 1.0);
    assert_eq!(at("warden_clients_connected"), 1.0);
    assert!(at("warden_execution_start_seconds_count") >= 2.0);
    assert!(at(r#"warden_execution_start_seconds_bucket{le="+Inf"}"#) >= 2.0);
    assert!(at("warden_store_commit_seconds_count") > 0.0 && at("warden_store_commits_total") > 0.0);
    assert!(at("warden_events_published_total") > 0.0);
    assert!(at(r#"warden_http_requests_total{route="/api/v1/executions",status="201"}"#) >= 2.0);
    assert!(at(r#"warden_http_requests_total{route="/api/v1/executions/{id}",status="200"}"#) >= 1.0);
    assert!(text.contains("# TYPE warden_http_requests_total counter"));
}
