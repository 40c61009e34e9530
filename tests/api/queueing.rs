//! FIFO queues per provider, concurrency and start-rate limits, queue positions.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn ts(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

#[actix_web::test]
async fn twenty_executions_start_in_creation_order_never_more_than_two_at_once() {
    let d = spawn_for_executions().await;
    d.set_limits("local", 2, 0).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(d.exec("sleep 0.1").await["id"].clone());
    }
    let mut done = Vec::new();
    for id in &ids {
        done.push(d.wait_final(id).await);
    }
    assert!(done.iter().all(|e| e["status"] == "succeeded"));

    let mut by_start = done.clone();
    by_start.sort_by_key(|e| (ts(&e["started_at"]), e["id"].as_i64()));
    let start_order: Vec<&Value> = by_start.iter().map(|e| &e["id"]).collect();
    assert_eq!(start_order, ids.iter().collect::<Vec<_>>(), "starts follow creation order");

    // Sweep over start (+1) and finish (-1) instants; a finish at the same instant as a
    // start frees its slot first.
    let mut moments: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for e in &done {
        moments.push((ts(&e["started_at"]), 1));
        moments.push((ts(&e["finished_at"]), -1));
    }
    moments.sort();
    let mut running = 0;
    for (_, change) in moments {
        running += change;
        assert!(running <= 2, "more than two ran at once");
    }
}

#[actix_web::test]
async fn providers_do_not_block_each_other() {
    let d = spawn_for_executions().await;
    d.set_limits("local", 1, 0).await;
    let other = json!({"name": "other-shell", "provider": "other", "command": ["sh", "-c", "{prompt}"]});
    expect_json(d.post("/api/v1/profiles", &other).await, StatusCode::CREATED).await;

    let blocker = d.exec("sleep 30").await["id"].clone();
    d.wait_status(&blocker, "running").await;
    let waiting = d.exec("true").await;
    assert_eq!(waiting["queue_position"], 0, "queued behind the blocker");
    let elsewhere = d.exec_with(json!({"prompt": "true", "profile": "other-shell", "cwd": "/tmp"})).await["id"].clone();
    assert_eq!(d.wait_final(&elsewhere).await["status"], "succeeded");
    assert_eq!(d.execution(&waiting["id"]).await["status"], "queued");

    let providers = d.get_ok("/api/v1/providers").await;
    let local = providers["items"].as_array().unwrap().iter().find(|p| p["name"] == "local").unwrap().clone();
    assert_eq!((local["running"].as_u64(), local["queued"].as_u64()), (Some(1), Some(1)));

    expect_json(d.post(&format!("/api/v1/executions/{blocker}/cancel"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(d.wait_final(&waiting["id"]).await["status"], "succeeded");
}

#[actix_web::test]
async fn the_start_rate_spaces_starts() {
    let d = spawn_for_executions().await;
    d.set_limits("local", 0, 120).await; // one start every 500 ms
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(d.exec("true").await["id"].clone());
    }
    let mut starts = Vec::new();
    for id in &ids {
        starts.push(ts(&d.wait_final(id).await["started_at"]));
    }
    for pair in starts.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 495, "starts {gap} ms apart; the rate allows one per 500 ms");
    }
}

#[actix_web::test]
async fn queue_positions_are_exact_and_cancelling_a_queued_execution_removes_it() {
    let d = spawn_for_executions().await;
    d.set_limits("local", 1, 0).await;
    let running = d.exec("sleep 30").await["id"].clone();
    d.wait_status(&running, "running").await;
    let queued: Vec<Value> = futures_util::future::join_all((0..3).map(|_| d.exec("echo ran"))).await;
    let mut ids: Vec<Value> = queued.iter().map(|e| e["id"].clone()).collect();
    ids.sort_by_key(|id| id.as_i64());
    for (position, id) in ids.iter().enumerate() {
        assert_eq!(d.execution(id).await["queue_position"], position, "{id}");
    }

    let cancelled =
        expect_json(d.post(&format!("/api/v1/executions/{}/cancel", ids[0]), &json!({})).await, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["started_at"], Value::Null, "it never started");
    assert_eq!(d.execution(&ids[1]).await["queue_position"], 0);
    assert_eq!(d.execution(&ids[2]).await["queue_position"], 1);

    expect_json(d.post(&format!("/api/v1/executions/{running}/cancel"), &json!({})).await, StatusCode::OK).await;
    for id in &ids[1..] {
        assert_eq!(d.wait_final(id).await["status"], "succeeded");
    }
    assert_eq!(d.execution(&ids[0]).await["status"], "cancelled");
    assert!(d.output(&ids[0]).await.is_empty(), "a cancelled queued execution never ran");
}

#[actix_web::test]
async fn raising_a_limit_starts_waiting_executions_at_once() {
    let d = spawn_for_executions().await;
    d.set_limits("local", 1, 0).await;
    let ids: Vec<Value> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(d.exec("sleep 30").await["id"].clone());
        }
        ids
    };
    d.wait_status(&ids[0], "running").await;
    assert_eq!(d.execution(&ids[2]).await["status"], "queued");
    d.set_limits("local", 3, 0).await;
    for id in &ids {
        d.wait_status(id, "running").await;
    }
    for id in &ids {
        d.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).await;
    }
}
