//! `Idempotency-Key`: a repeated POST returns the original response and creates nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

impl TestDaemon {
    async fn post_with_key(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path).header("idempotency-key", key).json(body).send().await.expect("POST")
    }

    /// Items listed at `path`; for a transcript, the user's messages (agents reply).
    async fn count(&self, path: &str) -> usize {
        let page = self.get_ok(&format!("{path}?limit=500")).await;
        page["items"].as_array().unwrap().iter().filter(|i| i.get("role").is_none_or(|r| r == "user")).count()
    }
}

#[actix_web::test]
async fn a_repeated_create_returns_the_original_and_creates_nothing() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let body = json!({ "prompt": "true", "cwd": dir.path() });
    let first = d.post_with_key("/api/v1/executions", "k-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = d.post_with_key("/api/v1/executions", "k-1", &body).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the original response, byte for byte");
    assert_eq!(d.count("/api/v1/executions").await, 1);

    let other = json!({ "prompt": "false", "cwd": dir.path() });
    let reused = d.post_with_key("/api/v1/executions", "k-1", &other).await;
    let problem = expect_problem(reused, StatusCode::CONFLICT, "idempotency_key_reused").await;
    assert!(problem["detail"].as_str().unwrap().contains("k-1"), "{problem}");
    let elsewhere = d.post_with_key("/api/v1/sessions", "k-1", &json!({ "cwd": dir.path() })).await;
    expect_problem(elsewhere, StatusCode::CONFLICT, "idempotency_key_reused").await;
    assert_eq!(d.count("/api/v1/executions").await, 1);
    assert_eq!(d.count("/api/v1/sessions").await, 0);

    // Keys survive a restart.
    d.wait_final(&first["id"]).await;
    let d = d.restart().await;
    let replayed = d.post_with_key("/api/v1/executions", "k-1", &body).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replayed.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_eq!(d.count("/api/v1/executions").await, 1);
}

#[actix_web::test]
async fn every_kind_of_create_honours_the_key() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let session =
        expect_json(d.post("/api/v1/sessions", &json!({ "cwd": dir.path() })).await, StatusCode::CREATED).await;
    let creates = [
        ("/api/v1/workspaces", json!({ "name": "app", "path": dir.path() }), "/api/v1/workspaces"),
        ("/api/v1/approvals", json!({ "title": "ok?" }), "/api/v1/approvals"),
        ("/api/v1/sessions", json!({ "cwd": dir.path() }), "/api/v1/sessions"),
        (
            &*format!("/api/v1/sessions/{}/messages", session["id"]),
            json!({ "content": "true" }),
            &*format!("/api/v1/sessions/{}/messages", session["id"]),
        ),
    ];
    for (n, (path, body, list)) in creates.iter().enumerate() {
        let before = d.count(list).await;
        let key = format!("create-{n}");
        let first = d.post_with_key(path, &key, body).await;
        assert!(first.status().is_success(), "{path}: {}", first.status());
        let first: Value = first.json().await.unwrap();
        let again = d.post_with_key(path, &key, body).await;
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{path}");
        assert_eq!(again.json::<Value>().await.unwrap(), first, "{path}");
        assert_eq!(d.count(list).await, before + 1, "{path}: one created");
    }
}

#[actix_web::test]
async fn errors_replay_too_and_bad_keys_are_refused() {
    let d = spawn_daemon().await;
    let body = json!({ "prompt": "x", "profile": "nope", "cwd": "/" });
    let first = d.post_with_key("/api/v1/executions", "bad-profile", &body).await;
    expect_problem(first, StatusCode::NOT_FOUND, "not_found").await;
    let again = d.post_with_key("/api/v1/executions", "bad-profile", &body).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    expect_problem(again, StatusCode::NOT_FOUND, "not_found").await;

    for key in ["", &"k".repeat(256), "has space"] {
        let refused = d.post_with_key("/api/v1/approvals", key, &json!({ "title": "t" })).await;
        expect_problem(refused, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    assert_eq!(d.count("/api/v1/approvals").await, 0);
    // A GET ignores the header.
    let get = d.request(Method::GET, "/api/v1/status").header("idempotency-key", "g").send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
}

#[actix_web::test]
async fn racing_requests_with_one_key_create_one_thing() {
    let d = spawn_daemon().await;
    let body = json!({ "title": "only once" });
    let racers = (0..10).map(|_| d.post_with_key("/api/v1/approvals", "race", &body));
    let responses = futures_util::future::join_all(racers).await;
    let mut ids = std::collections::BTreeSet::new();
    for response in responses {
        match response.status() {
            StatusCode::CREATED => {
                ids.insert(response.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
            }
            StatusCode::CONFLICT => {
                expect_problem(response, StatusCode::CONFLICT, "idempotency_key_in_flight").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(d.count("/api/v1/approvals").await, 1);
}

/// A create remembers its key in its own transaction: killed right after its reply (the
/// exact response is written after it, and may never be), the daemon still replays it
/// after a restart, and the retry creates nothing.
#[actix_web::test]
async fn a_create_answered_just_before_a_crash_is_replayed_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let creates = [
        ("/api/v1/executions", json!({ "prompt": "true", "cwd": work })),
        ("/api/v1/approvals", json!({ "title": "deploy" })),
        ("/api/v1/sessions", json!({ "cwd": work })),
    ];
    for (round, (path, body)) in creates.iter().enumerate() {
        let d = ServeProcess::start(&home).await;
        let key = format!("crash-{round}");
        let sent = d.request(Method::POST, path).header("idempotency-key", &key).json(body).send().await.unwrap();
        let first = expect_json(sent, StatusCode::CREATED).await;
        d.kill_9().await;

        let d = ServeProcess::start(&home).await;
        let again = d.request(Method::POST, path).header("idempotency-key", &key).json(body).send().await.unwrap();
        assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"), "{path}");
        let replayed = expect_json(again, StatusCode::CREATED).await;
        assert_eq!(replayed["id"], first["id"], "{path}: the same one, not a second");
        let listed = d.get_ok(&format!("{path}?limit=500")).await;
        assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{path}: {listed}");
        d.stop().await;
    }
}
