//! Worktree isolation: executions that each work in a git worktree of their own, on a
//! branch of their own, in real repositories; the user's repository is never touched.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::changes::Repo;
use crate::helpers::*;

impl TestDaemon {
    async fn isolated(&self, repo: &Repo, script: &str, base: Option<&str>) -> Value {
        let mut body = json!({ "prompt": script, "cwd": repo.path(), "isolation": "worktree" });
        if let Some(base) = base {
            body["base"] = base.into();
        }
        self.exec_with(body).await
    }

    async fn changed_paths(&self, id: &Value) -> Vec<String> {
        let report = self.get_ok(&format!("/api/v1/executions/{id}/changes")).await;
        let files = report["changes"]["files"].as_array().unwrap_or_else(|| panic!("{report}"));
        files.iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect()
    }
}

/// What a user would notice changed in their repository: every file of `.git` but the
/// branches and worktrees warden adds, and their files.
fn user_state(repo: &Repo) -> (Vec<(std::path::PathBuf, Vec<u8>)>, String, String, String) {
    let git_dir = repo.path().join(".git");
    let kept: Vec<_> = repo
        .git_dir_contents()
        .into_iter()
        .filter(|(path, _)| {
            let inside = path.strip_prefix(&git_dir).unwrap().to_string_lossy().into_owned();
            !(inside.starts_with("refs/heads/warden/")
                || inside.starts_with("worktrees/")
                || inside.starts_with("objects/")
                || inside.starts_with("logs/refs/heads/warden/"))
        })
        .collect();
    let read = |f: &str| std::fs::read_to_string(repo.path().join(f)).unwrap_or_default();
    (kept, read("app.txt"), read("notes.txt"), repo.git(&["stash", "list"]))
}

#[actix_web::test]
async fn three_isolated_executions_each_show_only_their_own_work_and_leave_the_user_alone() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("app.txt", "line one\n"), (".gitignore", "*.log\n")]);
    // The user's work in progress: an edit, an untracked file, an ignored one.
    repo.write("app.txt", "line one\nthe user's edit\n");
    repo.write("notes.txt", "untracked notes\n");
    repo.write("debug.log", "ignored\n");
    let before = user_state(&repo);

    let runs: Vec<Value> = futures_util::future::join_all((1..=3).map(|n| {
        let script =
            format!("cat notes.txt > /dev/null && echo agent {n} >> app.txt && ls debug.log 2>/dev/null; true");
        let repo = &repo;
        let d = &d;
        async move { d.isolated(repo, &script, None).await }
    }))
    .await;
    let mut worktrees = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        let ended = d.wait_final(&run["id"]).await;
        assert_eq!(ended["status"], "succeeded", "{ended}");
        assert_eq!(ended["isolation"], "worktree");
        assert!(ended["branch"].as_str().unwrap().starts_with(&format!("warden/{}-", run["id"])), "{ended}");
        let worktree = std::path::PathBuf::from(ended["worktree"].as_str().unwrap());
        // It started from the user's work tree as they saw it, and only its own line is its work.
        let text = std::fs::read_to_string(worktree.join("app.txt")).unwrap();
        assert_eq!(text, format!("line one\nthe user's edit\nagent {}\n", n + 1));
        assert!(worktree.join("notes.txt").exists() && !worktree.join("debug.log").exists());
        assert_eq!(d.changed_paths(&run["id"]).await, ["app.txt"]);
        let diff = d.get(&format!("/api/v1/executions/{}/diff", run["id"])).await.text().await.unwrap();
        assert!(diff.contains(&format!("+agent {}", n + 1)) && !diff.contains("+the user's edit"), "{diff}");
        worktrees.push((run["id"].clone(), worktree, ended["branch"].as_str().unwrap().to_owned()));
    }
    assert_eq!(user_state(&repo), before, "the user's repository changed");

    // Discarded, a worktree and its branch are gone; twice is a conflict, not an error.
    let (id, worktree, branch) = &worktrees[0];
    let discarded =
        expect_json(d.post(&format!("/api/v1/executions/{id}/discard"), &json!({})).await, StatusCode::OK).await;
    assert!(discarded["worktree"].is_null() && discarded["branch"].is_null(), "{discarded}");
    assert!(!worktree.exists());
    assert!(!repo.git(&["branch", "--list", branch]).contains("warden"));
    assert!(d.execution(id).await["worktree"].is_null(), "the stored execution says so");
    expect_problem(
        d.post(&format!("/api/v1/executions/{id}/discard"), &json!({})).await,
        StatusCode::CONFLICT,
        "no_worktree",
    )
    .await;
    assert_eq!(user_state(&repo), before, "discarding changed the user's repository");

    // The second one's work applies onto the user's work tree, their edit kept and their
    // index untouched; the third then conflicts on the same line and changes nothing.
    let index = std::fs::read(repo.path().join(".git/index")).unwrap();
    let (second, third) = (&worktrees[1].0, &worktrees[2].0);
    let applied =
        expect_json(d.post(&format!("/api/v1/executions/{second}/apply"), &json!({})).await, StatusCode::OK).await;
    assert_eq!(applied["files"], json!(["app.txt"]));
    let app = std::fs::read_to_string(repo.path().join("app.txt")).unwrap();
    assert_eq!(app, "line one\nthe user's edit\nagent 2\n");
    assert_eq!(std::fs::read(repo.path().join(".git/index")).unwrap(), index, "the index changed");
    let conflict = d.post(&format!("/api/v1/executions/{third}/apply"), &json!({})).await;
    let problem = expect_problem(conflict, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(problem["files"], json!(["app.txt"]), "{problem}");
    assert_eq!(std::fs::read_to_string(repo.path().join("app.txt")).unwrap(), app, "a conflict changed the file");
    let discarded = d.post(&format!("/api/v1/executions/{id}/apply"), &json!({})).await;
    expect_problem(discarded, StatusCode::CONFLICT, "no_worktree").await;
}

#[actix_web::test]
async fn a_base_revision_is_a_clean_start_and_bad_requests_are_refused() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("app.txt", "line one\n")]);
    repo.write("app.txt", "line one\nthe user's edit\n");
    let clean = d.isolated(&repo, "cat app.txt; echo two >> app.txt", Some("HEAD")).await;
    let ended = d.wait_final(&clean["id"]).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(d.output_text(&clean["id"]).await, "line one", "it saw HEAD, not the user's edit");
    assert_eq!(ended["base"].as_str().unwrap(), repo.git(&["rev-parse", "HEAD"]).trim());

    // Outside a git work tree, with a base but no isolation, or a base that is no revision.
    let plain = tempfile::tempdir().unwrap();
    let outside = json!({ "prompt": "true", "cwd": plain.path(), "isolation": "worktree" });
    let outside = d.post("/api/v1/executions", &outside).await;
    let problem = expect_problem(outside, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(problem["detail"].as_str().unwrap().contains("git work tree"), "{problem}");
    let stray = json!({ "prompt": "true", "cwd": repo.path(), "base": "HEAD" });
    expect_problem(d.post("/api/v1/executions", &stray).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        .await;
    let option = json!({ "prompt": "true", "cwd": repo.path(), "isolation": "worktree", "base": "--output=/tmp/x" });
    expect_problem(d.post("/api/v1/executions", &option).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        .await;
    // A revision that does not exist fails the execution with a clear error, not the daemon.
    let missing = d.isolated(&repo, "true", Some("no-such-branch")).await;
    let failed = d.wait_final(&missing["id"]).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("no commit \"no-such-branch\""), "{failed}");
    assert!(failed["started_at"].is_null());
    // Not isolated: nothing to discard.
    let shared = d.exec_with(json!({ "prompt": "true", "cwd": repo.path() })).await;
    d.wait_final(&shared["id"]).await;
    let refused = d.post(&format!("/api/v1/executions/{}/discard", shared["id"]), &json!({})).await;
    expect_problem(refused, StatusCode::CONFLICT, "no_worktree").await;
}
