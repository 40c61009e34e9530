//! The token, the Host guard and CORS.

use reqwest::{Method, StatusCode};

use crate::helpers::*;

/// Every route that needs the token, from the daemon's own route table, with the method
/// (upper case) it answers.
pub fn guarded_routes() -> Vec<(String, &'static str)> {
    warden::http::API_ROUTES
        .iter()
        .chain(warden::http::GUARDED_ROUTES)
        .map(|(method, path)| (method.to_uppercase(), *path))
        .collect()
}

fn concrete(path: &str) -> String {
    path.replace("{workspace}", "1").replace("{name}", "shell").replace("{id}", "1")
}

#[actix_web::test]
async fn health_needs_no_token() {
    let d = spawn_daemon().await;
    let response = d.client.get(d.url("/health")).send().await.unwrap();
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[actix_web::test]
async fn every_api_route_refuses_a_missing_or_wrong_token() {
    let d = spawn_daemon().await;
    let routes = guarded_routes();
    assert!(routes.len() >= 40, "the route table lists every route: {routes:?}");
    for (method, path) in &routes {
        let url = d.url(&concrete(path));
        let method = Method::from_bytes(method.as_bytes()).unwrap();

        let missing = d.client.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(
            missing.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()),
            Some("Bearer realm=\"warden\"".to_owned()),
            "{method} {path}"
        );
        expect_problem(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;

        let wrong = d.client.request(method.clone(), &url).bearer_auth("0".repeat(64)).send().await.unwrap();
        expect_problem(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await;

        let almost = format!("{}x", &d.token[..63]);
        let wrong_query = d.client.request(method, format!("{url}?token={almost}")).send().await.unwrap();
        expect_problem(wrong_query, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // Nothing was created by the refused POSTs and PUTs.
    let workspaces = d.get_ok("/api/v1/workspaces").await;
    assert_eq!(workspaces["items"].as_array().unwrap().len(), 0);
    let shell = d.get_ok("/api/v1/profiles/shell").await;
    assert_eq!(shell["origin"], "builtin");
}

#[actix_web::test]
async fn the_token_is_accepted_as_a_query_parameter() {
    let d = spawn_daemon().await;
    let response = d.client.get(d.url(&format!("/api/v1/status?token={}", d.token))).send().await.unwrap();
    let status = expect_json(response, StatusCode::OK).await;
    assert_eq!(status["pid"], std::process::id());
}

#[actix_web::test]
async fn a_foreign_host_header_is_forbidden_everywhere() {
    let d = spawn_daemon().await;
    for path in ["/health", "/api/v1/status"] {
        for host in ["evil.example", "evil.example:80", &format!("attacker.test:{}", d.port), "localhost:1"] {
            let response = d.request(Method::GET, path).header("Host", host).send().await.unwrap();
            expect_problem(response, StatusCode::FORBIDDEN, "forbidden_host").await;
        }
        for host in [format!("localhost:{}", d.port), format!("127.0.0.1:{}", d.port), "localhost".into()] {
            let response = d.request(Method::GET, path).header("Host", host.as_str()).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{host} on {path}");
        }
    }
}

#[actix_web::test]
async fn cross_origin_requests_need_a_configured_origin() {
    let d = spawn_with(|c| c.cors_origins = vec!["http://localhost:3000".into()]).await;

    let evil =
        d.request(Method::GET, "/api/v1/workspaces").header("Origin", "http://evil.example").send().await.unwrap();
    expect_problem(evil, StatusCode::FORBIDDEN, "forbidden_origin").await;

    let configured =
        d.request(Method::GET, "/api/v1/workspaces").header("Origin", "http://localhost:3000").send().await.unwrap();
    assert_eq!(configured.status(), StatusCode::OK);
    assert_eq!(configured.headers()["access-control-allow-origin"], "http://localhost:3000");

    // The daemon's own origin (its web page) is always allowed.
    let own_origin = format!("http://127.0.0.1:{}", d.port);
    let own = d.request(Method::GET, "/api/v1/workspaces").header("Origin", &own_origin).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);

    // A preflight from an unlisted origin gets no permission.
    let preflight = d
        .client
        .request(Method::OPTIONS, d.url("/api/v1/workspaces"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn status_describes_the_daemon() {
    let d = spawn_daemon().await;
    let status = d.get_ok("/api/v1/status").await;
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["pid"], std::process::id());
    assert_eq!(status["url"], d.base_url);
    assert_eq!(status["data_dir"], d.home.dir().to_str().unwrap());
    assert!(status["uptime_s"].as_u64().is_some());
    assert_eq!(status["counts"]["workspaces"], 0);
    // `shell` and the ready agent profiles (claude, codex, gemini).
    assert_eq!(status["counts"]["profiles"], 4);
    assert_eq!(status["counts"]["clients"]["max"], 10);
}
