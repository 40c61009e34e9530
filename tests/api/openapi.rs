//! The OpenAPI document describes every route the daemon serves.

use reqwest::StatusCode;

use crate::auth::guarded_routes;
use crate::helpers::*;

#[actix_web::test]
async fn openapi_is_3_1_and_lists_every_route() {
    let d = spawn_daemon().await;
    let doc = expect_json(d.get("/api/v1/openapi.json").await, StatusCode::OK).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let mut routes = guarded_routes();
    routes.push(("GET".into(), "/health"));
    for (method, path) in &routes {
        let operation =
            &paths.get(*path).unwrap_or_else(|| panic!("{path} is not in openapi.json"))[method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not in openapi.json");
        assert!(operation["responses"].is_object(), "{method} {path} has no responses");
    }
    let documented: usize = paths.values().map(|item| item.as_object().unwrap().len()).sum();
    assert_eq!(documented, routes.len(), "openapi.json documents a route the tests do not know");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}

#[actix_web::test]
async fn the_document_is_valid_and_its_operation_ids_are_unique() {
    let d = spawn_daemon().await;
    let doc = expect_json(d.get("/api/v1/openapi.json").await, StatusCode::OK).await;
    let mut ids: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .map(|operation| operation["operationId"].as_str().expect("every operation has an operationId").to_owned())
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "operationIds repeat: {ids:?}");
    assert!(ids.contains(&"listExecutions".to_owned()) && ids.contains(&"decideApproval".to_owned()), "{ids:?}");

    // And a validator of the specification itself (what client generators run) agrees.
    let validator =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract/.venv/bin/openapi-spec-validator");
    assert!(validator.exists(), "openapi-spec-validator is not installed: run `make test` (scripts/test-deps.sh)");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let checked = tokio::process::Command::new(&validator).arg(&file).output().await.unwrap();
    assert!(checked.status.success(), "openapi-spec-validator: {}{}", stdout(&checked), stderr(&checked));
}
