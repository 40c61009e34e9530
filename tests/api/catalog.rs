//! Workspaces, profiles and providers over the API.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("a page has items")
}

#[actix_web::test]
async fn a_workspace_is_created_listed_fetched_and_deleted() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    let canonical = std::fs::canonicalize(dir.path()).unwrap();

    let created = expect_json(
        d.post("/api/v1/workspaces", &json!({"name": "app", "path": dir.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["name"], "app");
    assert_eq!(created["path"], canonical.to_str().unwrap());
    let id = created["id"].as_i64().unwrap();
    let created_at = created["created_at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok() && created_at.ends_with('Z'), "{created_at}");

    let listed = d.get_ok("/api/v1/workspaces").await;
    assert_eq!(items(&listed), &vec![created.clone()]);
    assert_eq!(listed["next_cursor"], Value::Null);

    assert_eq!(d.get_ok(&format!("/api/v1/workspaces/{id}")).await, created);
    assert_eq!(d.get_ok("/api/v1/workspaces/app").await, created);

    let deleted = expect_json(d.delete("/api/v1/workspaces/app").await, StatusCode::OK).await;
    assert_eq!(deleted, created);
    expect_problem(d.get("/api/v1/workspaces/app").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.delete("/api/v1/workspaces/app").await, StatusCode::NOT_FOUND, "not_found").await;
    assert!(dir.path().is_dir(), "deleting a workspace leaves its directory alone");
}

#[actix_web::test]
async fn workspace_paths_are_stored_canonical() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    let canonical = std::fs::canonicalize(&real).unwrap();

    let via_link = format!("{}/link", dir.path().display());
    let via_dots = format!("{}/real/../real/.", dir.path().display());
    for (name, path) in [("a", via_link), ("b", via_dots)] {
        let created =
            expect_json(d.post("/api/v1/workspaces", &json!({"name": name, "path": path})).await, StatusCode::CREATED)
                .await;
        assert_eq!(created["path"], canonical.to_str().unwrap());
    }
}

#[actix_web::test]
async fn a_duplicate_workspace_name_is_a_conflict_and_changes_nothing() {
    let d = spawn_daemon().await;
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    expect_json(d.post("/api/v1/workspaces", &json!({"name": "app", "path": one.path()})).await, StatusCode::CREATED)
        .await;
    let problem = expect_problem(
        d.post("/api/v1/workspaces", &json!({"name": "app", "path": two.path()})).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("app"), "{problem}");
    let listed = d.get_ok("/api/v1/workspaces").await;
    assert_eq!(items(&listed).len(), 1);
    assert_eq!(items(&listed)[0]["path"], std::fs::canonicalize(one.path()).unwrap().to_str().unwrap());
}

#[actix_web::test]
async fn concurrent_creates_of_one_name_make_one_workspace() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    let body = json!({"name": "race", "path": dir.path()});
    let responses = futures_util::future::join_all((0..20).map(|_| d.post("/api/v1/workspaces", &body))).await;
    let created = responses.iter().filter(|r| r.status() == StatusCode::CREATED).count();
    let conflicts = responses.iter().filter(|r| r.status() == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (1, 19));
    assert_eq!(items(&d.get_ok("/api/v1/workspaces").await).len(), 1);
}

#[actix_web::test]
async fn bad_workspace_paths_and_names_are_422_problems() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let good = dir.path().to_str().unwrap();
    let cases = [
        (json!({"name": "a", "path": "/definitely/not/here"}), "cannot be used"),
        (json!({"name": "a", "path": file}), "not a directory"),
        (json!({"name": "a", "path": "relative/dir"}), "absolute"),
        (json!({"name": "a", "path": ""}), "empty"),
        (json!({"name": "has space", "path": good}), "name"),
        (json!({"name": "", "path": good}), "name"),
        (json!({"name": "123", "path": good}), "digits"),
    ];
    for (body, expected) in cases {
        let problem = expect_problem(
            d.post("/api/v1/workspaces", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        )
        .await;
        assert!(problem["detail"].as_str().unwrap().contains(expected), "{body}: {problem}");
    }
    assert!(items(&d.get_ok("/api/v1/workspaces").await).is_empty());
}

#[actix_web::test]
async fn workspaces_are_paged_with_a_cursor() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let body = json!({"name": format!("w{i}"), "path": dir.path()});
        expect_json(d.post("/api/v1/workspaces", &body).await, StatusCode::CREATED).await;
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/workspaces?limit=2".to_owned();
    loop {
        let page = d.get_ok(&path).await;
        assert!(items(&page).len() <= 2);
        names.extend(items(&page).iter().map(|w| w["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/workspaces?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(names, ["w0", "w1", "w2", "w3", "w4"]);
}

#[actix_web::test]
async fn the_builtin_shell_profile_and_local_provider_exist() {
    let d = spawn_daemon().await;
    let shell = d.get_ok("/api/v1/profiles/shell").await;
    assert_eq!(shell["command"], json!(["sh", "-c", "{prompt}"]));
    assert_eq!(shell["provider"], "local");
    assert_eq!(shell["approval"], "never");
    assert_eq!(shell["origin"], "builtin");
    let providers = d.get_ok("/api/v1/providers").await;
    let local = items(&providers).iter().find(|p| p["name"] == "local").expect("the local provider").clone();
    assert_eq!((local["running"].as_u64(), local["queued"].as_u64()), (Some(0), Some(0)));
    expect_problem(d.get("/api/v1/profiles/nope").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/providers/nope").await, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn config_file_profiles_are_listed_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let home = warden::home::Home::new(dir.path().join("home"));
    home.ensure().unwrap();
    std::fs::write(
        home.config_path(),
        r#"
[providers.anthropic]
max_concurrent = 2
rate_per_minute = 10

[profiles.claude]
provider = "anthropic"
command = ["claude", "-p", "{prompt}"]
approval = "always"
timeout_s = 3600
env = { CLAUDE_FLAG = "1" }
"#,
    )
    .unwrap();
    let d = spawn_in(home, |_| {}).await;

    let claude = d.get_ok("/api/v1/profiles/claude").await;
    assert_eq!(claude["origin"], "config");
    assert_eq!(claude["approval"], "always");
    assert_eq!(claude["timeout_s"], 3600);
    let anthropic = d.get_ok("/api/v1/providers/anthropic").await;
    assert_eq!((anthropic["max_concurrent"].as_u64(), anthropic["rate_per_minute"].as_u64()), (Some(2), Some(10)));

    let spec = json!({"provider": "anthropic", "command": ["other"]});
    expect_problem(d.put("/api/v1/profiles/claude", &spec).await, StatusCode::CONFLICT, "read_only").await;
    expect_problem(d.delete("/api/v1/profiles/claude").await, StatusCode::CONFLICT, "read_only").await;
    expect_problem(d.delete("/api/v1/profiles/shell").await, StatusCode::CONFLICT, "read_only").await;
    let create = json!({"name": "claude", "provider": "x", "command": ["x"]});
    expect_problem(d.post("/api/v1/profiles", &create).await, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(d.get_ok("/api/v1/profiles/claude").await, claude);

    // A file provider's limits, though, may be turned over the API: stored, they win
    // over the file's after a restart too.
    let limits = json!({"max_concurrent": 5, "rate_per_minute": 0});
    let changed = expect_json(d.put("/api/v1/providers/anthropic", &limits).await, StatusCode::OK).await;
    assert_eq!((changed["max_concurrent"].as_u64(), changed["origin"].as_str()), (Some(5), Some("api")));
    let d = d.restart().await;
    let kept = d.get_ok("/api/v1/providers/anthropic").await;
    assert_eq!((kept["max_concurrent"].as_u64(), kept["rate_per_minute"].as_u64()), (Some(5), Some(0)));
}

#[actix_web::test]
async fn api_profiles_are_created_changed_deleted_and_survive_a_restart() {
    let d = spawn_daemon().await;
    let body = json!({
        "name": "my-codex", "provider": "openai", "command": ["codex", "exec", "{prompt}"],
        "approval": "always", "env": {"OPENAI_MODEL": "x"}
    });
    let created = expect_json(d.post("/api/v1/profiles", &body).await, StatusCode::CREATED).await;
    assert_eq!(created["origin"], "api");
    // The env is shown by names only: its values may be secrets.
    assert_eq!(created["env"], json!(["OPENAI_MODEL"]));
    // Naming a new provider brings it into being with the default limits.
    let openai = d.get_ok("/api/v1/providers/openai").await;
    assert_eq!(openai["max_concurrent"], 4);

    expect_problem(d.post("/api/v1/profiles", &body).await, StatusCode::CONFLICT, "conflict").await;

    let spec = json!({"provider": "openai", "command": ["codex", "{prompt}"], "timeout_s": 60});
    let updated = expect_json(d.put("/api/v1/profiles/my-codex", &spec).await, StatusCode::OK).await;
    assert_eq!(updated["command"], json!(["codex", "{prompt}"]));
    assert_eq!(updated["approval"], "never");
    expect_problem(d.put("/api/v1/profiles/missing", &spec).await, StatusCode::NOT_FOUND, "not_found").await;

    let d = d.restart().await;
    assert_eq!(d.get_ok("/api/v1/profiles/my-codex").await, updated);

    expect_json(d.delete("/api/v1/profiles/my-codex").await, StatusCode::OK).await;
    expect_problem(d.get("/api/v1/profiles/my-codex").await, StatusCode::NOT_FOUND, "not_found").await;
    let d = d.restart().await;
    expect_problem(d.get("/api/v1/profiles/my-codex").await, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn ready_agent_profiles_exist_and_an_api_profile_replaces_one_until_deleted() {
    let d = spawn_daemon().await;
    let claude = d.get_ok("/api/v1/profiles/claude").await;
    assert_eq!((claude["origin"].as_str(), claude["format"].as_str()), (Some("builtin"), Some("claude-stream-json")));
    assert_eq!(claude["provider"], "anthropic");
    assert!(claude["continue_command"].to_string().contains("{agent_session_id}"), "{claude}");
    for (name, format) in [("codex", "codex-json"), ("gemini", "gemini-stream-json")] {
        assert_eq!(d.get_ok(&format!("/api/v1/profiles/{name}")).await["format"], format);
    }
    // A ready profile cannot be changed in place, but one of the user's may take its name.
    let spec = json!({"provider": "anthropic", "command": ["my-claude", "{prompt}"]});
    expect_problem(d.put("/api/v1/profiles/claude", &spec).await, StatusCode::CONFLICT, "read_only").await;
    let mine = json!({"name": "claude", "provider": "anthropic", "command": ["my-claude", "{prompt}"]});
    let created = expect_json(d.post("/api/v1/profiles", &mine).await, StatusCode::CREATED).await;
    assert_eq!((created["origin"].as_str(), created["format"].as_str()), (Some("api"), Some("text")));
    let d = d.restart().await;
    assert_eq!(d.get_ok("/api/v1/profiles/claude").await["command"], json!(["my-claude", "{prompt}"]));
    expect_json(d.delete("/api/v1/profiles/claude").await, StatusCode::OK).await;
    assert_eq!(d.get_ok("/api/v1/profiles/claude").await, claude, "the ready profile is back");
    expect_problem(d.delete("/api/v1/profiles/claude").await, StatusCode::CONFLICT, "read_only").await;
}

#[actix_web::test]
async fn invalid_profiles_are_422_problems() {
    let d = spawn_daemon().await;
    let cases = [
        json!({"name": "p", "provider": "local", "command": []}),
        json!({"name": "p", "provider": "local", "command": [""]}),
        json!({"name": "p", "provider": "local", "command": ["x"], "approval": "sometimes"}),
        json!({"name": "p", "provider": "local", "command": ["x"], "timeout_s": 0}),
        json!({"name": "p", "provider": "local", "command": ["x"], "env": {"BAD-NAME": "1"}}),
        json!({"name": "p p", "provider": "local", "command": ["x"]}),
        json!({"name": "p", "provider": "no/slash", "command": ["x"]}),
        json!({"name": "p", "provider": "local", "command": ["x"], "shell": true}),
    ];
    for body in cases {
        expect_problem(d.post("/api/v1/profiles", &body).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
            .await;
    }
    let names: Vec<Value> = items(&d.get_ok("/api/v1/profiles").await).iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, [json!("claude"), json!("codex"), json!("gemini"), json!("shell")], "nothing was added");
}

#[actix_web::test]
async fn provider_limits_are_set_over_the_api_and_kept() {
    let d = spawn_daemon().await;
    let set = expect_json(
        d.put("/api/v1/providers/local", &json!({"max_concurrent": 2, "rate_per_minute": 30})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!((set["max_concurrent"].as_u64(), set["rate_per_minute"].as_u64()), (Some(2), Some(30)));
    expect_problem(
        d.put("/api/v1/providers/local", &json!({"max_concurrent": -1})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
    )
    .await;
    let d = d.restart().await;
    let local = d.get_ok("/api/v1/providers/local").await;
    assert_eq!((local["max_concurrent"].as_u64(), local["rate_per_minute"].as_u64()), (Some(2), Some(30)));
}

#[actix_web::test]
async fn workspaces_survive_a_restart() {
    let d = spawn_daemon().await;
    let dir = tempfile::tempdir().unwrap();
    let created = expect_json(
        d.post("/api/v1/workspaces", &json!({"name": "keep", "path": dir.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    let d = d.restart().await;
    assert_eq!(d.get_ok("/api/v1/workspaces/keep").await, created);
}
