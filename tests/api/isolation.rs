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
    (kept, repo.read("app.txt"), repo.read("other.txt") + &repo.read("notes.txt"), repo.git(&["stash", "list"]))
}

const APP: &str = "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\n";

#[actix_web::test]
async fn three_isolated_executions_each_show_only_their_own_work_and_leave_the_user_alone() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("app.txt", APP), ("other.txt", "other\n"), (".gitignore", "*.log\n")]);
    // The user's work in progress: an edit, an untracked file, an ignored one, a stash.
    repo.write("other.txt", "stashed\n");
    repo.git(&["stash", "-q"]);
    repo.write("other.txt", "other, the user's edit\n");
    repo.write("notes.txt", "untracked notes\n");
    repo.write("debug.log", "ignored\n");
    let before = user_state(&repo);

    // Two edit the first line differently, the third the last line.
    let edits = ["s/^one$/one, agent 1/", "s/^one$/one, agent 2/", "s/^eight$/eight, agent 3/"];
    let runs: Vec<Value> = futures_util::future::join_all(edits.iter().map(|edit| {
        let script = format!("cat notes.txt > /dev/null && sed -i '{edit}' app.txt && ls debug.log 2>/dev/null; true");
        let repo = &repo;
        let d = &d;
        async move { d.isolated(repo, &script, None).await }
    }))
    .await;
    let mut worktrees = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        let ended = d.wait_final(&run["id"]).await;
        assert_eq!(ended["status"], "succeeded", "{ended}");
        assert_eq!((&ended["isolation"], &ended["base_branch"]), (&json!("worktree"), &json!("main")));
        assert!(ended["branch"].as_str().unwrap().starts_with(&format!("warden/{}-", run["id"])), "{ended}");
        let worktree = std::path::PathBuf::from(ended["worktree"].as_str().unwrap());
        // It started from the user's work tree as they saw it, and only its own edit is its work.
        assert_eq!(std::fs::read_to_string(worktree.join("other.txt")).unwrap(), "other, the user's edit\n");
        assert!(worktree.join("notes.txt").exists() && !worktree.join("debug.log").exists());
        assert_eq!(d.changed_paths(&run["id"]).await, ["app.txt"]);
        let diff = d.get(&format!("/api/v1/executions/{}/diff", run["id"])).await.text().await.unwrap();
        assert!(diff.contains(&format!(", agent {}", n + 1)) && !diff.contains("the user's edit"), "{diff}");
        for other in (1..=3).filter(|o| *o != n + 1) {
            assert!(!diff.contains(&format!("agent {other}")), "{diff}");
        }
        worktrees.push((run["id"].clone(), worktree, ended["branch"].as_str().unwrap().to_owned()));
    }
    assert_eq!(user_state(&repo), before, "the user's repository changed");

    // The first merges into main (checked out here) as one commit of its own work; the
    // checkout follows and the user's uncommitted edit stays uncommitted.
    let (first, second, third) = (&worktrees[0], &worktrees[1], &worktrees[2]);
    let main = repo.git(&["rev-parse", "main"]);
    let merged =
        expect_json(d.post(&format!("/api/v1/executions/{}/merge", first.0), &json!({})).await, StatusCode::OK).await;
    assert_eq!(
        (&merged["into"], &merged["squash"], &merged["files"]),
        (&json!("main"), &json!(true), &json!(["app.txt"]))
    );
    assert_eq!(repo.git(&["rev-parse", "main"]).trim(), merged["commit"].as_str().unwrap());
    assert_eq!(repo.git(&["rev-parse", "main^"]), main);
    assert_eq!(repo.git(&["show", "main:other.txt"]), "other\n", "the user's uncommitted edit was committed");
    assert!(repo.read("app.txt").starts_with("one, agent 1\n"));
    assert_eq!(repo.read("other.txt"), "other, the user's edit\n");
    assert_eq!(repo.git(&["status", "--porcelain"]), " M other.txt\n?? notes.txt\n");
    assert_eq!(repo.git(&["stash", "list"]), before.3);
    assert!(!first.1.exists() && !repo.git(&["branch", "--list", &first.2]).contains("warden"));
    let shown = d.execution(&first.0).await;
    assert!(shown["branch"].is_null() && shown["worktree"].is_null(), "{shown}");
    let events = d.get_ok(&format!("/api/v1/events/history?topics=execution.merged&execution_id={}", first.0)).await;
    assert_eq!(events["items"][0]["data"]["commit"], merged["commit"], "{events}");
    let again = d.post(&format!("/api/v1/executions/{}/merge", first.0), &json!({})).await;
    expect_problem(again, StatusCode::CONFLICT, "no_worktree").await;

    // The second changed the same line: a conflict naming the file, nothing changed.
    let state = user_state(&repo);
    let conflict = d.post(&format!("/api/v1/executions/{}/merge", second.0), &json!({})).await;
    let problem = expect_problem(conflict, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(problem["files"], json!(["app.txt"]), "{problem}");
    assert_eq!(user_state(&repo), state, "a conflicting merge changed the user's repository");
    assert!(second.1.exists(), "a conflicting merge removed the worktree");

    // The third applies onto the work tree, the user's edits and index kept.
    let index = std::fs::read(repo.path().join(".git/index")).unwrap();
    let applied =
        expect_json(d.post(&format!("/api/v1/executions/{}/apply", third.0), &json!({})).await, StatusCode::OK).await;
    assert_eq!(applied["files"], json!(["app.txt"]));
    assert!(repo.read("app.txt").starts_with("one, agent 1\n") && repo.read("app.txt").ends_with("eight, agent 3\n"));
    assert_eq!(repo.read("other.txt"), "other, the user's edit\n");
    assert_eq!(std::fs::read(repo.path().join(".git/index")).unwrap(), index, "the index changed");
    let conflict = d.post(&format!("/api/v1/executions/{}/apply", second.0), &json!({})).await;
    let problem = expect_problem(conflict, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(problem["files"], json!(["app.txt"]), "{problem}");

    // Discarded, a worktree and its branch are gone; twice is a conflict, not an error.
    let state = user_state(&repo);
    let discarded =
        expect_json(d.post(&format!("/api/v1/executions/{}/discard", second.0), &json!({})).await, StatusCode::OK)
            .await;
    assert!(discarded["worktree"].is_null() && discarded["branch"].is_null(), "{discarded}");
    assert!(!second.1.exists());
    assert!(!repo.git(&["branch", "--list", &second.2]).contains("warden"));
    assert!(d.execution(&second.0).await["worktree"].is_null(), "the stored execution says so");
    let twice = d.post(&format!("/api/v1/executions/{}/discard", second.0), &json!({})).await;
    expect_problem(twice, StatusCode::CONFLICT, "no_worktree").await;
    let gone = d.post(&format!("/api/v1/executions/{}/apply", second.0), &json!({})).await;
    expect_problem(gone, StatusCode::CONFLICT, "no_worktree").await;
    assert_eq!(user_state(&repo), state, "discarding changed the user's repository");
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

#[actix_web::test]
async fn an_agent_cannot_merge_or_apply_work_with_its_token_and_the_owner_can() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("app.txt", APP)]);
    let done = d.isolated(&repo, "sed -i 's/^one$/one, agent/' app.txt", Some("HEAD")).await;
    assert_eq!(d.wait_final(&done["id"]).await["status"], "succeeded");
    // A second agent, in its own worktree, tries to bring the first one's work into
    // main with the token it was given.
    let script = format!(
        r#"python3 -c '
import os, urllib.request
for action in ["merge", "apply", "discard"]:
    request = urllib.request.Request(os.environ["WARDEN_URL"] + "/api/v1/executions/{}/" + action, data=b"{{}}",
        headers={{"Authorization": "Bearer " + os.environ["WARDEN_TOKEN"], "Content-Type": "application/json"}})
    try:
        status = urllib.request.urlopen(request).status
    except urllib.error.HTTPError as e:
        status = e.code
    print(action, status)
'"#,
        done["id"]
    );
    let agent = d.isolated(&repo, &script, Some("HEAD")).await;
    assert_eq!(d.wait_final(&agent["id"]).await["status"], "succeeded");
    assert_eq!(d.output_text(&agent["id"]).await, "merge 403\napply 403\ndiscard 403");
    assert_eq!(repo.read("app.txt"), APP);
    // The same request with the owner's token merges it.
    let merged =
        expect_json(d.post(&format!("/api/v1/executions/{}/merge", done["id"]), &json!({})).await, StatusCode::OK)
            .await;
    assert_eq!((&merged["into"], &merged["squash"]), (&json!("main"), &json!(false)), "{merged}");
    assert!(repo.read("app.txt").starts_with("one, agent\n"));
}

/// A session profile whose turns run their prompt in a worktree.
async fn isolated_session(d: &TestDaemon, repo: &Repo) -> Value {
    let profile = json!({
        "name": "isolated", "provider": "local", "isolation": "worktree",
        "command": ["sh", "-c", "{prompt}"], "continue_command": ["sh", "-c", "{prompt}"],
    });
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    let session = json!({ "profile": "isolated", "cwd": repo.path() });
    expect_json(d.post("/api/v1/sessions", &session).await, StatusCode::CREATED).await
}

/// Sends a message to a session; returns its turn's execution once final, its end
/// recorded.
async fn turn(d: &TestDaemon, session: &Value, content: &str) -> Value {
    let sent = d.post(&format!("/api/v1/sessions/{}/messages", session["id"]), &json!({ "content": content })).await;
    let sent = expect_json(sent, StatusCode::ACCEPTED).await;
    d.wait_recorded(&sent["execution"]["id"]).await
}

impl TestDaemon {
    /// Waits until the execution is final and its end snapshot recorded (its work is then
    /// on its branch); returns it.
    async fn wait_recorded(&self, id: &Value) -> Value {
        self.wait_final(id).await;
        wait_until("the end snapshot", std::time::Duration::from_secs(30), || async {
            let shown = self.execution(id).await;
            (!shown["changes"]["end_tree"].is_null()).then_some(shown)
        })
        .await
    }
}

#[actix_web::test]
async fn a_sessions_turns_share_its_worktree_and_build_on_their_own_work() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("app.txt", APP)]);
    let session = isolated_session(&d, &repo).await;
    let first = turn(&d, &session, "echo first > turn1.txt").await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let second = turn(&d, &session, "cat turn1.txt && echo second > turn2.txt").await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(d.output_text(&second["id"]).await, "first", "the second turn did not see the first's work");
    for key in ["worktree", "branch", "base"] {
        assert_eq!(first[key], second[key], "{key}: {first} {second}");
    }
    let mut paths = d.changed_paths(&second["id"]).await;
    paths.sort();
    assert_eq!(paths, ["turn1.txt", "turn2.txt"], "a turn's changes are the session's work so far");
    assert!(!repo.path().join("turn1.txt").exists());

    // Merged, the session's work lands whole, and every turn says its branch is gone.
    let merged = d.post(&format!("/api/v1/executions/{}/merge", second["id"]), &json!({})).await;
    let merged = expect_json(merged, StatusCode::OK).await;
    assert_eq!(merged["files"], json!(["turn1.txt", "turn2.txt"]), "{merged}");
    assert_eq!(repo.read("turn2.txt"), "second\n");
    for id in [&first["id"], &second["id"]] {
        let shown = d.execution(id).await;
        assert!(shown["branch"].is_null() && shown["worktree"].is_null(), "{shown}");
        let listed = d.get_ok("/api/v1/executions?limit=10").await;
        let listed = listed["items"].as_array().unwrap().iter().find(|e| e["id"] == *id).cloned().unwrap();
        assert!(listed["branch"].is_null(), "the list still shows a branch: {listed}");
    }
    // The next turn starts a new worktree from the work tree as it is now.
    let third = turn(&d, &session, "cat turn2.txt").await;
    assert_eq!(d.output_text(&third["id"]).await, "second");
    assert_ne!(third["branch"], first["branch"]);
}

#[actix_web::test]
async fn old_worktrees_are_removed_with_their_work_kept_on_the_branch() {
    let d = spawn_with(|c| {
        c.kill_grace = std::time::Duration::from_millis(300);
        c.changes.keep_worktrees = std::time::Duration::from_secs(2);
    })
    .await;
    let repo = Repo::new(&[("app.txt", APP)]);
    let run = d.isolated(&repo, "echo work > new.txt", Some("HEAD")).await;
    let ended = d.wait_recorded(&run["id"]).await;
    let worktree = std::path::PathBuf::from(ended["worktree"].as_str().unwrap());
    let branch = ended["branch"].as_str().unwrap().to_owned();
    // Something written in the worktree after the end is not lost either.
    std::fs::write(worktree.join("later.txt"), "later\n").unwrap();
    wait_until("the old worktree removed", std::time::Duration::from_secs(30), || async {
        d.execution(&run["id"]).await["worktree"].is_null().then_some(())
    })
    .await;
    assert!(!worktree.exists());
    assert_eq!(d.execution(&run["id"]).await["branch"], json!(branch));
    assert_eq!(repo.git(&["show", &format!("{branch}:new.txt")]), "work\n");
    assert_eq!(repo.git(&["show", &format!("{branch}:later.txt")]), "later\n");
    assert!(!repo.git(&["worktree", "list"]).contains(&worktree.display().to_string()));
    // Its work still applies and merges from the branch.
    let applied = d.post(&format!("/api/v1/executions/{}/apply", run["id"]), &json!({})).await;
    assert_eq!(expect_json(applied, StatusCode::OK).await["files"], json!(["later.txt", "new.txt"]));
    assert_eq!(repo.read("later.txt"), "later\n");
    for file in ["later.txt", "new.txt"] {
        std::fs::remove_file(repo.path().join(file)).unwrap();
    }
    let merged = d.post(&format!("/api/v1/executions/{}/merge", run["id"]), &json!({})).await;
    let merged = expect_json(merged, StatusCode::OK).await;
    assert_eq!(merged["files"], json!(["later.txt", "new.txt"]), "{merged}");
}

#[actix_web::test]
async fn a_worktree_the_user_deleted_is_pruned_and_its_branch_kept() {
    let d = spawn_with(|c| {
        c.kill_grace = std::time::Duration::from_millis(300);
        // Kept a long time: only the deletion makes the clean-up act.
        c.changes.keep_worktrees = std::time::Duration::from_secs(4);
    })
    .await;
    let repo = Repo::new(&[("app.txt", APP)]);
    let run = d.isolated(&repo, "echo work > new.txt", Some("HEAD")).await;
    let ended = d.wait_recorded(&run["id"]).await;
    let worktree = std::path::PathBuf::from(ended["worktree"].as_str().unwrap());
    std::fs::remove_dir_all(&worktree).unwrap();
    wait_until("the deleted worktree pruned", std::time::Duration::from_secs(30), || async {
        let listed = repo.git(&["worktree", "list", "--porcelain"]);
        (d.execution(&run["id"]).await["worktree"].is_null() && !listed.contains(&worktree.display().to_string()))
            .then_some(())
    })
    .await;
    let branch = ended["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["show", &format!("{branch}:new.txt")]), "work\n");
    let discarded = d.post(&format!("/api/v1/executions/{}/discard", run["id"]), &json!({})).await;
    expect_json(discarded, StatusCode::OK).await;
    assert!(!repo.git(&["branch", "--list", branch]).contains("warden"));
}

#[actix_web::test]
async fn detached_heads_other_worktrees_bare_repositories_and_leftovers_of_a_crash() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("app.txt", APP)]);

    // The base branch is checked out in another worktree: the merge lands there, and
    // that checkout follows.
    let other = tempfile::tempdir().unwrap();
    let other = other.path().join("feature");
    repo.git(&["worktree", "add", "-q", "-b", "feature", other.to_str().unwrap()]);
    let run = d.isolated(&repo, "echo feature work > f.txt", Some("feature")).await;
    let ended = d.wait_recorded(&run["id"]).await;
    assert_eq!(ended["base_branch"], "feature", "{ended}");
    let merged = d.post(&format!("/api/v1/executions/{}/merge", run["id"]), &json!({})).await;
    let merged = expect_json(merged, StatusCode::OK).await;
    assert_eq!(merged["into"], "feature");
    assert_eq!(std::fs::read_to_string(other.join("f.txt")).unwrap(), "feature work\n");
    assert!(!repo.path().join("f.txt").exists(), "main's checkout changed");

    // A detached HEAD: no branch to merge into by default, any branch when told.
    repo.git(&["checkout", "-q", "--detach"]);
    let run = d.isolated(&repo, "echo detached > d.txt", None).await;
    let ended = d.wait_recorded(&run["id"]).await;
    assert!(ended["base_branch"].is_null(), "{ended}");
    let refused = d.post(&format!("/api/v1/executions/{}/merge", run["id"]), &json!({})).await;
    let problem = expect_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    assert!(problem["detail"].as_str().unwrap().contains("into"), "{problem}");
    for (into, code) in [("no-such-branch", "invalid_request"), ("main~1", "invalid_request")] {
        let refused = d.post(&format!("/api/v1/executions/{}/merge", run["id"]), &json!({ "into": into })).await;
        expect_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    let unknown = d.post(&format!("/api/v1/executions/{}/merge", run["id"]), &json!({ "onto": "main" })).await;
    expect_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    let merged = d.post(&format!("/api/v1/executions/{}/merge", run["id"]), &json!({ "into": "main" })).await;
    assert_eq!(expect_json(merged, StatusCode::OK).await["files"], json!(["d.txt"]));
    assert_eq!(repo.git(&["show", "main:d.txt"]), "detached\n");

    // A bare repository is no work tree: refused.
    let bare = tempfile::tempdir().unwrap();
    std::process::Command::new("git").args(["init", "-q", "--bare"]).current_dir(bare.path()).status().unwrap();
    let in_bare = json!({ "prompt": "true", "cwd": bare.path(), "isolation": "worktree" });
    let refused = d.post("/api/v1/executions", &in_bare);
    expect_problem(refused.await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;

    // A crash while an execution was being prepared leaves a half-made worktree and
    // branch where it will be made again: they are replaced, nothing half-made stays.
    let gated = json!({
        "name": "gated-isolated", "provider": "local", "isolation": "worktree", "approval": "always",
        "command": ["sh", "-c", "{prompt}"],
    });
    expect_json(d.post("/api/v1/profiles", &gated).await, StatusCode::CREATED).await;
    let body = json!({ "prompt": "ls", "cwd": repo.path(), "profile": "gated-isolated", "base": "HEAD" });
    let waiting = d.exec_with(body).await;
    let place =
        std::path::Path::new(ended["worktree"].as_str().unwrap()).parent().unwrap().join(waiting["id"].to_string());
    let branch = format!("warden/{}-ls", waiting["id"]);
    repo.git(&["worktree", "add", "-q", "-b", &branch, place.to_str().unwrap()]);
    std::fs::write(place.join("half-made"), "from the crash\n").unwrap();
    let gate = wait_until("the gate", std::time::Duration::from_secs(10), || async {
        let shown = d.execution(&waiting["id"]).await;
        (!shown["approval_id"].is_null()).then(|| shown["approval_id"].clone())
    })
    .await;
    let approve = d.post(&format!("/api/v1/approvals/{gate}"), &json!({ "decision": "approve" })).await;
    assert!(approve.status().is_success());
    let ended = d.wait_recorded(&waiting["id"]).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert_eq!(ended["worktree"], json!(place.display().to_string()));
    assert!(!d.output_text(&waiting["id"]).await.contains("half-made"));
    assert!(!place.join("half-made").exists());
}

#[actix_web::test]
async fn a_confined_agent_commits_in_its_worktree_but_cannot_touch_the_repositorys_config() {
    let d = spawn_for_executions().await;
    let repo = Repo::new_in(&outside_scratch_dirs(), &[("app.txt", APP)]);
    for (name, sandbox) in [("confined", "workspace-write"), ("unconfined", "protect-data")] {
        let profile = json!({
            "name": name, "provider": "local", "isolation": "worktree", "sandbox": sandbox,
            "command": ["sh", "-c", "{prompt}"],
        });
        expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    }
    let config = repo.path().join(".git/config");
    let script = format!(
        "echo agent > agent.txt && git add agent.txt && git -c user.name=agent -c user.email=a@a commit -qm 'by the agent' \
         && echo committed; (echo '[core] hooksPath = /tmp/evil' >> {}) 2>/dev/null && echo config-written || echo config-refused",
        config.display()
    );
    let before = std::fs::read(&config).unwrap();
    let run = |profile: &str| json!({ "prompt": script, "cwd": repo.path(), "profile": profile, "base": "HEAD" });
    let confined = d.exec_with(run("confined")).await;
    let ended = d.wait_recorded(&confined["id"]).await;
    assert_eq!((&ended["status"], &ended["sandbox"]), (&json!("succeeded"), &json!("workspace-write")), "{ended}");
    // git's commit also drops its AUTO_MERGE pseudo-ref, which locks packed-refs beside
    // the config: refused too, and said on stderr; the commit is made all the same.
    let said = d.output_text(&confined["id"]).await;
    let said: Vec<&str> = said.lines().filter(|l| !l.contains("packed-refs.lock': Permission denied")).collect();
    assert_eq!(said, ["committed", "config-refused"]);
    assert_eq!(std::fs::read(&config).unwrap(), before, "a confined agent wrote the repository's config");
    let branch = ended["branch"].as_str().unwrap();
    // Its commit is the branch's tip: the end had nothing more to record.
    assert_eq!(repo.git(&["log", "-1", "--format=%s", branch]).trim(), "by the agent");
    // The same with the default sandbox, which protects only warden's data dir: written.
    let unconfined = d.exec_with(run("unconfined")).await;
    d.wait_recorded(&unconfined["id"]).await;
    assert_eq!(d.output_text(&unconfined["id"]).await, "committed\nconfig-written");
    assert_ne!(std::fs::read(&config).unwrap(), before);
}

#[actix_web::test]
async fn deleting_or_pruning_an_isolated_execution_removes_its_worktree_and_keeps_its_branch() {
    // Worktrees are kept for years here: only retention removes them.
    let d =
        spawn_with_config_file("[retention]\nenabled = false\nkeep_last = 1\n[worktrees]\nkeep_days = 3650\n").await;
    let repo = Repo::new(&[("app.txt", APP)]);
    let deleted = d.wait_recorded(&d.isolated(&repo, "echo deleted > one.txt", Some("HEAD")).await["id"]).await;
    let pruned = d.wait_recorded(&d.isolated(&repo, "echo pruned > two.txt", Some("HEAD")).await["id"]).await;
    let kept = d.wait_recorded(&d.isolated(&repo, "echo kept > three.txt", Some("HEAD")).await["id"]).await;
    let dir = |e: &Value| std::path::PathBuf::from(e["worktree"].as_str().unwrap());
    // Written in the worktree after the end: recorded on the branch before it goes.
    std::fs::write(dir(&deleted).join("later.txt"), "later\n").unwrap();

    expect_json(d.delete(&format!("/api/v1/executions/{}", deleted["id"])).await, StatusCode::OK).await;
    assert!(!dir(&deleted).exists(), "the deleted execution's worktree is gone");
    let branch = deleted["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["show", &format!("{branch}:one.txt")]), "deleted\n", "its branch stays");
    assert_eq!(repo.git(&["show", &format!("{branch}:later.txt")]), "later\n");

    let stopped = d.stop().await;
    let conn = rusqlite::Connection::open(stopped.home.db_path()).unwrap();
    conn.execute(
        "UPDATE executions SET finished_at = '2026-01-01T00:00:00.000Z' WHERE id = ?1",
        [pruned["id"].as_i64()],
    )
    .unwrap();
    drop(conn);
    let d = stopped.start().await;
    let report = expect_json(d.post("/api/v1/prune", &json!({})).await, StatusCode::OK).await;
    assert_eq!((report["executions"].as_u64(), report["worktrees"].as_u64()), (Some(1), Some(1)), "{report}");
    assert!(!dir(&pruned).exists(), "the pruned execution's worktree is gone");
    assert_eq!(d.execution(&pruned["id"]).await["worktree"], Value::Null);
    let branch = pruned["branch"].as_str().unwrap();
    assert_eq!(repo.git(&["show", &format!("{branch}:two.txt")]), "pruned\n", "its branch stays");
    assert!(dir(&kept).exists(), "the kept execution's worktree stays");
    assert_eq!(d.execution(&kept["id"]).await["worktree"], kept["worktree"]);
}
