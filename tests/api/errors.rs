//! Bad input gets a problem+json answer and leaves state as it was.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

async fn workspace_count(d: &TestDaemon) -> usize {
    d.get_ok("/api/v1/workspaces").await["items"].as_array().unwrap().len()
}

#[actix_web::test]
async fn malformed_json_is_a_400_problem() {
    let d = spawn_daemon().await;
    for body in ["{\"name\":", "not json", "", "{\"name\": \"x\",}"] {
        let response = d
            .request(Method::POST, "/api/v1/workspaces")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let problem = expect_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        assert!(problem["detail"].as_str().unwrap().contains("JSON"), "{problem}");
    }
    assert_eq!(workspace_count(&d).await, 0);
}

#[actix_web::test]
async fn wrong_types_and_unknown_fields_are_422_problems() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let cases = [
        json!({"name": "x", "path": 5}),
        json!({"name": "x"}),
        json!({"name": "x", "path": path, "colour": "red"}),
        json!({"name": 5, "path": path}),
    ];
    for body in cases {
        let problem = expect_problem(
            d.post("/api/v1/workspaces", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
        assert!(problem["detail"].as_str().unwrap().starts_with("invalid body"), "{problem}");
    }
    let unknown = expect_problem(
        d.post("/api/v1/workspaces", &json!({"name": "x", "path": path, "colour": "red"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    assert!(unknown["detail"].as_str().unwrap().contains("colour"), "names the unknown field: {unknown}");
    assert_eq!(workspace_count(&d).await, 0);
}

#[actix_web::test]
async fn an_oversize_body_is_a_413_problem() {
    let d = spawn_daemon().await;
    let huge = json!({"name": "x", "path": "/".repeat(2 * 1024 * 1024)});
    expect_problem(d.post("/api/v1/workspaces", &huge).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(workspace_count(&d).await, 0);
}

#[actix_web::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let d = spawn_daemon().await;
    let response = d
        .request(Method::POST, "/api/v1/workspaces")
        .header("content-type", "text/plain")
        .body("{\"name\":\"x\",\"path\":\"/tmp\"}")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    assert_eq!(workspace_count(&d).await, 0);
}

#[actix_web::test]
async fn unknown_routes_and_methods_are_problems_not_html() {
    let d = spawn_daemon().await;
    expect_problem(d.get("/api/v1/nothing-here").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/nothing-here").await, StatusCode::NOT_FOUND, "not_found").await;
    let patch = d.request(Method::PATCH, "/api/v1/workspaces").send().await.unwrap();
    expect_problem(patch, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    expect_problem(d.delete("/api/v1/status").await, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[actix_web::test]
async fn bad_paging_parameters_are_400_problems() {
    let d = spawn_daemon().await;
    for query in ["limit=0", "limit=501", "limit=abc", "cursor=not-a-number", "limit=-1"] {
        let response = d.get(&format!("/api/v1/workspaces?{query}")).await;
        expect_problem(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[actix_web::test]
async fn every_request_has_an_id_in_its_header_and_its_problem() {
    let d = spawn_daemon().await;
    let ok = d.get("/api/v1/status").await;
    let id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 16, "{id}");
    let other = d.get("/api/v1/status").await.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, other, "each request gets its own id");

    let missing = d.get("/api/v1/executions/999").await;
    let header = missing.headers()["x-request-id"].to_str().unwrap().to_owned();
    let problem = expect_problem(missing, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(problem["request_id"], header);

    // A client's own id is kept when it is a sane token, replaced when it is not.
    let mine = d.request(Method::GET, "/api/v1/nope").header("x-request-id", "client-42.a").send().await.unwrap();
    assert_eq!(mine.headers()["x-request-id"], "client-42.a");
    assert_eq!(expect_problem(mine, StatusCode::NOT_FOUND, "not_found").await["request_id"], "client-42.a");
    let odd =
        d.request(Method::GET, "/api/v1/status").header("x-request-id", "bad id with spaces").send().await.unwrap();
    assert_ne!(odd.headers()["x-request-id"], "bad id with spaces");
    // Unauthenticated requests and bare framework errors get one too.
    let unauthorized = d.client.get(d.url("/api/v1/status")).send().await.unwrap();
    let header = unauthorized.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(expect_problem(unauthorized, StatusCode::UNAUTHORIZED, "unauthorized").await["request_id"], header);
}
