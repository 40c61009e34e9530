//! Workspace changes: snapshots at start and end of executions in real git repositories
//! made in temp dirs, the changed files, the diff, and that the user's repository is
//! never touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// A git repository in a temp dir, with a commit.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub fn new(files: &[(&str, &str)]) -> Repo {
        Repo::new_in(&std::env::temp_dir(), files)
    }

    /// A repository in a temp dir below `parent` (outside the system temp dir, which a
    /// `workspace-write` sandbox lets agents write, when `parent` is).
    pub fn new_in(parent: &Path, files: &[(&str, &str)]) -> Repo {
        std::fs::create_dir_all(parent).unwrap();
        let repo = Repo { dir: tempfile::tempdir_in(parent).unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        for (path, text) in files {
            repo.write(path, text);
        }
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "first"]);
        repo
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    pub fn write(&self, path: &str, text: &str) {
        std::fs::write(self.dir.path().join(path), text).unwrap();
    }

    /// A file's text, empty when there is none.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(path)).unwrap_or_default()
    }

    /// Runs git as the user would, without taking optional locks (so that looking does
    /// not itself rewrite the index).
    pub fn git(&self, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(self.dir.path())
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .expect("git runs");
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every file under `.git` with its bytes.
    pub fn git_dir_contents(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, into: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, into);
                } else {
                    into.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut contents = BTreeMap::new();
        walk(&self.dir.path().join(".git"), &mut contents);
        contents
    }
}

impl TestDaemon {
    async fn exec_in(&self, dir: &Path, script: &str) -> Value {
        self.exec_with(json!({ "prompt": script, "cwd": dir })).await
    }

    /// Waits until the execution is final and its end snapshot is recorded.
    async fn wait_changes_recorded(&self, id: &Value) -> Value {
        self.wait_final(id).await;
        wait_until("the end snapshot", Duration::from_secs(30), || async {
            let execution = self.execution(id).await;
            let changes = &execution["changes"];
            (changes["end_tree"].is_string() || changes["error"].is_string()).then_some(execution)
        })
        .await
    }

    async fn changed_files(&self, id: &Value) -> Value {
        self.get_ok(&format!("/api/v1/executions/{id}/changes")).await
    }

    async fn diff(&self, id: &Value, query: &str) -> reqwest::Response {
        self.get(&format!("/api/v1/executions/{id}/diff{query}")).await
    }
}

fn summary(files: &Value) -> Vec<(String, String, u64, u64, bool)> {
    files
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["status"].as_str().unwrap().to_owned(),
                f["additions"].as_u64().unwrap(),
                f["deletions"].as_u64().unwrap(),
                f["binary"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// Enough lines that a rename with a small edit is still recognised as one.
fn long_text(tag: &str) -> String {
    (1..=40).map(|n| format!("{tag} line {n}\n")).collect()
}

#[actix_web::test]
async fn edits_adds_deletes_and_renames_are_listed_and_diffed() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[
        ("a.txt", "one\ntwo\n"),
        ("b.txt", "doomed\n"),
        ("old.txt", &long_text("moved")),
        (".gitignore", "*.log\n"),
    ]);
    repo.write("untracked-before.txt", "here before the execution\n");
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();

    let script = "printf 'three\\n' >> a.txt && rm b.txt && mv old.txt new.txt && echo extra >> new.txt \
                  && echo hello > added.txt && echo noise > build.log && printf 'a\\000b' > img.bin";
    let execution = d.exec_in(&repo.path(), script).await;
    let id = &execution["id"];
    let done = d.wait_changes_recorded(id).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    let recorded = &done["changes"];
    assert_eq!(recorded["repo_root"], repo.path().display().to_string());
    assert_eq!(recorded["head"], head);
    assert!(recorded["start_tree"].is_string() && recorded["end_tree"].is_string(), "{recorded}");
    assert_ne!(recorded["start_tree"], recorded["end_tree"]);
    assert_eq!(recorded["totals"], json!({ "files": 5, "additions": 3, "deletions": 1 }), "{recorded}");
    assert!(recorded["error"].is_null());
    // A list shows the same execution, its end snapshot included (a final execution's
    // JSON is stored when it ends and patched when the snapshot lands).
    let listed = wait_until("the list to show the execution as GET does", Duration::from_secs(10), || async {
        let page = d.get_ok("/api/v1/executions?limit=1").await;
        (page["items"][0] == d.execution(id).await).then_some(page["items"][0].clone())
    })
    .await;
    assert_eq!(listed["changes"], done["changes"]);

    let report = d.changed_files(id).await;
    let changes = &report["changes"];
    assert_eq!(changes["live"], false);
    assert_eq!(
        summary(&changes["files"]),
        vec![
            ("a.txt".into(), "modified".into(), 1, 0, false),
            ("added.txt".into(), "added".into(), 1, 0, false),
            ("b.txt".into(), "deleted".into(), 0, 1, false),
            ("img.bin".into(), "added".into(), 0, 0, true),
            ("new.txt".into(), "renamed".into(), 1, 0, false),
        ],
        "ignored build.log and the untouched untracked file must not show: {report}"
    );
    assert_eq!(changes["files"][4]["old_path"], "old.txt");
    assert_eq!(changes["totals"], recorded["totals"]);

    let response = d.diff(id, "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/x-diff; charset=utf-8");
    assert_eq!(response.headers()["x-warden-diff-truncated"], "false");
    let text = response.text().await.unwrap();
    assert!(text.contains("diff --git a/a.txt b/a.txt") && text.contains("\n+three\n"), "{text}");
    assert!(text.contains("rename from old.txt\nrename to new.txt"), "{text}");
    assert!(text.contains("Binary files /dev/null and b/img.bin differ"), "{text}");
    assert!(!text.contains("build.log") && !text.contains("untracked-before"), "{text}");
    assert!(text.contains("\n one\n"), "3 lines of context by default: {text}");
    let tight = d.diff(id, "?path=a.txt&context=0").await.text().await.unwrap();
    assert!(tight.contains("+three") && !tight.contains("\n one\n") && !tight.contains("added.txt"), "{tight}");

    let renamed = d.diff(id, "?path=old.txt").await.text().await.unwrap();
    assert!(renamed.contains("rename from old.txt") && renamed.contains("+extra"), "{renamed}");

    let per_file = expect_json(d.diff(id, "?format=json").await, StatusCode::OK).await;
    assert_eq!(per_file["truncated"], false);
    let files = per_file["files"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    assert!(files[0]["diff"].as_str().unwrap().starts_with("diff --git a/a.txt b/a.txt"), "{per_file}");
    assert!(files[3]["binary"].as_bool().unwrap() && files[3]["diff"].as_str().unwrap().contains("Binary files"));
    assert!(files.iter().all(|f| f["truncated"] == false));

    // The event that dashboards show as "+3 −1 in 5 files".
    let history = d.get_ok("/api/v1/events/history?topics=execution.changes").await;
    let event = history["items"].as_array().unwrap().iter().find(|e| e["execution_id"] == *id).cloned();
    let event = event.unwrap_or_else(|| panic!("no execution.changes event: {history}"));
    assert_eq!(event["priority"], "normal");
    assert_eq!(event["data"]["changes"]["totals"], recorded["totals"]);
}

#[actix_web::test]
async fn bad_diff_requests_are_clear_problems() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("a.txt", "a\n")]);
    let execution = d.exec_in(&repo.path(), "echo b >> a.txt").await;
    let id = &execution["id"];
    d.wait_changes_recorded(id).await;

    expect_problem(d.diff(id, "?path=nope.txt").await, StatusCode::NOT_FOUND, "unknown_path").await;
    // A path reaches only the execution's changed files, never the file system.
    for outside in ["../../../../etc/passwd", "/etc/passwd", "a.txt/../../x"] {
        let query = format!("?path={}", outside.replace('/', "%2F"));
        expect_problem(d.diff(id, &query).await, StatusCode::NOT_FOUND, "unknown_path").await;
    }
    expect_problem(d.diff(id, "?context=5000").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
    expect_problem(d.diff(id, "?context=-1").await, StatusCode::BAD_REQUEST, "invalid_request").await;
    expect_problem(d.diff(id, "?format=html").await, StatusCode::BAD_REQUEST, "invalid_request").await;
    expect_problem(d.diff(&json!(999), "").await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.get("/api/v1/executions/999/changes").await, StatusCode::NOT_FOUND, "not_found").await;
    // Still answering, and the diff is unchanged.
    assert!(d.diff(id, "").await.text().await.unwrap().contains("+b"));
}

#[actix_web::test]
async fn snapshots_leave_the_users_index_refs_and_status_byte_for_byte_unchanged() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("a.txt", "one\n"), ("b.txt", "two\n")]);
    // A user mid-work: something staged, something modified but not staged, an
    // untracked file, a stash.
    repo.write("b.txt", "stashed\n");
    repo.git(&["stash", "-q"]);
    repo.write("a.txt", "staged\n");
    repo.git(&["add", "a.txt"]);
    repo.write("a.txt", "staged, then edited\n");
    repo.write("new.txt", "untracked\n");
    let status_before = repo.git(&["status", "--porcelain=v2", "--branch"]);
    let git_before = repo.git_dir_contents();

    // An agent that changes nothing, and one that only looks.
    for script in ["true", "cat a.txt > /dev/null"] {
        let execution = d.exec_in(&repo.path(), script).await;
        let done = d.wait_changes_recorded(&execution["id"]).await;
        assert_eq!(done["changes"]["totals"]["files"], 0, "{done}");
        let report = d.changed_files(&execution["id"]).await;
        assert_eq!(report["changes"]["files"], json!([]));
    }

    let git_after = repo.git_dir_contents();
    let changed: Vec<_> = git_before
        .keys()
        .chain(git_after.keys())
        .filter(|path| git_before.get(*path) != git_after.get(*path))
        .collect();
    assert!(changed.is_empty(), "warden changed files in .git: {changed:?}");
    assert_eq!(repo.git(&["status", "--porcelain=v2", "--branch"]), status_before);
    assert_eq!(repo.git(&["stash", "list"]).lines().count(), 1);
}

#[actix_web::test]
async fn outside_a_git_work_tree_there_are_no_changes_rather_than_a_guess() {
    let d = spawn_for_executions().await;
    let plain = tempfile::tempdir().unwrap();
    let execution = d.exec_in(plain.path(), "echo hi > file.txt").await;
    let done = d.wait_final(&execution["id"]).await;
    assert_eq!(done["status"], "succeeded");
    assert!(done["changes"].is_null(), "{done}");

    let report = d.changed_files(&execution["id"]).await;
    assert!(report["changes"].is_null(), "{report}");
    assert!(report["reason"].as_str().unwrap().contains("not inside a git work tree"), "{report}");
    let problem = expect_problem(d.diff(&execution["id"], "").await, StatusCode::CONFLICT, "no_snapshots").await;
    assert!(problem["detail"].as_str().unwrap().contains("not inside a git work tree"), "{problem}");
}

#[actix_web::test]
async fn a_queued_execution_has_no_changes_yet() {
    let d = spawn_for_executions().await;
    d.set_limits("local", 1, 0).await;
    let repo = Repo::new(&[("a.txt", "a\n")]);
    let blocker = d.exec_in(&repo.path(), "sleep 30").await;
    d.wait_status(&blocker["id"], "running").await;
    let queued = d.exec_in(&repo.path(), "true").await;
    let report = d.changed_files(&queued["id"]).await;
    assert!(report["changes"].is_null());
    assert_eq!(report["reason"], "the execution has not started yet");
    expect_json(d.post(&format!("/api/v1/executions/{}/cancel", queued["id"]), &json!({})).await, StatusCode::OK).await;
    d.wait_final(&queued["id"]).await;
    let report = d.changed_files(&queued["id"]).await;
    assert_eq!(report["reason"], "the execution never ran (it ended cancelled)");
    expect_json(d.post(&format!("/api/v1/executions/{}/cancel", blocker["id"]), &json!({})).await, StatusCode::OK)
        .await;
}

#[actix_web::test]
async fn a_diff_over_the_limit_is_cut_with_a_marker_and_files_can_be_fetched_one_by_one() {
    let d = spawn_with(|c| c.changes.max_diff_bytes = 4096).await;
    let repo = Repo::new(&[("keep.txt", "k\n")]);
    let script = "seq 1 5 > a-small.txt && seq 1 3000 > b-big.txt && seq 1 5 > c-small.txt";
    let execution = d.exec_in(&repo.path(), script).await;
    let id = &execution["id"];
    let done = d.wait_changes_recorded(id).await;
    assert_eq!(done["changes"]["totals"], json!({ "files": 3, "additions": 3010, "deletions": 0 }));

    let response = d.diff(id, "").await;
    assert_eq!(response.headers()["x-warden-diff-truncated"], "true");
    let text = response.text().await.unwrap();
    assert!(text.len() < 4096 + 200, "{} bytes", text.len());
    assert!(text.contains("a-small.txt") && !text.contains("c-small.txt"), "{text}");
    assert!(text.trim_end().ends_with("ask for one file with ?path=]"), "{text}");

    let per_file = expect_json(d.diff(id, "?format=json").await, StatusCode::OK).await;
    assert_eq!(per_file["truncated"], true);
    let files = per_file["files"].as_array().unwrap();
    assert_eq!((files[0]["truncated"].as_bool(), files[0]["diff"].is_string()), (Some(false), true));
    assert_eq!(files[1]["truncated"], true);
    assert_eq!((files[2]["truncated"].as_bool(), files[2]["diff"].is_null()), (Some(true), true));

    let one = d.diff(id, "?path=c-small.txt").await;
    assert_eq!(one.headers()["x-warden-diff-truncated"], "false");
    assert_eq!(one.text().await.unwrap().lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).count(), 5);
}

#[actix_web::test]
async fn a_running_execution_shows_live_changes() {
    let d = spawn_with(|c| c.changes.live_interval = Duration::from_millis(100)).await;
    let repo = Repo::new(&[("a.txt", "a\n")]);
    let outside = tempfile::tempdir().unwrap();
    let go = outside.path().join("go");
    let script = format!(
        "echo first > live.txt; while [ ! -e {go} ]; do sleep 0.02; done; echo second > later.txt",
        go = go.display()
    );
    let execution = d.exec_in(&repo.path(), &script).await;
    let id = &execution["id"];

    let live = wait_until("live.txt in the live changes", Duration::from_secs(30), || async {
        let report = d.changed_files(id).await;
        let seen = report["changes"]["files"].as_array().is_some_and(|f| f.iter().any(|f| f["path"] == "live.txt"));
        seen.then_some(report)
    })
    .await;
    assert_eq!(live["changes"]["live"], true, "{live}");
    assert!(d.execution(id).await["changes"]["end_tree"].is_null());
    let text = d.diff(id, "").await.text().await.unwrap();
    assert!(text.contains("+first"), "{text}");

    std::fs::write(&go, "").unwrap();
    d.wait_changes_recorded(id).await;
    let report = d.changed_files(id).await;
    assert_eq!(report["changes"]["live"], false);
    let paths: Vec<_> = report["changes"]["files"].as_array().unwrap().iter().map(|f| f["path"].clone()).collect();
    assert_eq!(paths, vec![json!("later.txt"), json!("live.txt")]);
}

#[actix_web::test]
async fn overlapping_executions_in_one_work_tree_each_compare_with_their_own_start() {
    let d = spawn_for_executions().await;
    d.set_limits("local", 2, 0).await;
    let repo = Repo::new(&[("base.txt", "b\n")]);
    let outside = tempfile::tempdir().unwrap();
    let go = outside.path().join("go");
    let wait_go = format!("while [ ! -e {} ]; do sleep 0.02; done", go.display());

    let first = d.exec_in(&repo.path(), &format!("echo 1 > first.txt; {wait_go}")).await;
    let first_file = repo.path().join("first.txt");
    wait_until("first.txt", Duration::from_secs(30), || async { first_file.exists().then_some(()) }).await;
    let second = d.exec_in(&repo.path(), &format!("echo 2 > second.txt; {wait_go}")).await;
    let second_file = repo.path().join("second.txt");
    wait_until("second.txt", Duration::from_secs(30), || async { second_file.exists().then_some(()) }).await;
    std::fs::write(&go, "").unwrap();
    d.wait_changes_recorded(&first["id"]).await;
    d.wait_changes_recorded(&second["id"]).await;

    let paths = |report: Value| -> Vec<Value> {
        report["changes"]["files"].as_array().unwrap().iter().map(|f| f["path"].clone()).collect()
    };
    // The first ran while the second wrote: it sees both. The second started after
    // first.txt existed: it sees only its own.
    assert_eq!(paths(d.changed_files(&first["id"]).await), vec![json!("first.txt"), json!("second.txt")]);
    assert_eq!(paths(d.changed_files(&second["id"]).await), vec![json!("second.txt")]);
}

#[actix_web::test]
async fn a_snapshot_that_takes_too_long_is_recorded_and_never_fails_the_execution() {
    let d = spawn_with(|c| c.changes.start_timeout = Duration::from_millis(1)).await;
    let repo = Repo::new(&[("a.txt", "a\n")]);
    let execution = d.exec_in(&repo.path(), "echo ran").await;
    let done = d.wait_final(&execution["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(d.output_text(&execution["id"]).await, "ran");
    let error = done["changes"]["error"].as_str().unwrap_or_else(|| panic!("no snapshot error: {done}"));
    assert!(error.contains("took longer than"), "{error}");
    let report = d.changed_files(&execution["id"]).await;
    assert!(report["changes"].is_null());
    assert!(report["reason"].as_str().unwrap().contains("took longer than"), "{report}");
}

#[actix_web::test]
async fn warden_diff_prints_the_diff_and_a_stat() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("a.txt", "one\n"), ("b.txt", "bee\n")]);
    let execution = d.exec_in(&repo.path(), "echo two >> a.txt && rm b.txt").await;
    let id = execution["id"].to_string();
    d.wait_changes_recorded(&execution["id"]).await;

    let stat = warden(d.home.dir(), &["diff", &id, "--stat"]).await;
    assert!(stat.status.success(), "{}", stderr(&stat));
    let text = stdout(&stat);
    assert!(text.contains("a.txt") && text.contains("+1") && text.contains("b.txt") && text.contains("-1"), "{text}");
    assert!(text.contains("2 files changed, 1 insertion(+), 1 deletion(-)"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when not writing to a terminal: {text:?}");

    let diff = warden(d.home.dir(), &["diff", &id, "--path", "a.txt"]).await;
    let text = stdout(&diff);
    assert!(text.contains("diff --git a/a.txt b/a.txt") && text.contains("+two") && !text.contains("b.txt"), "{text}");

    let missing = warden(d.home.dir(), &["diff", &id, "--path", "zzz"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("zzz"), "{}", stderr(&missing));
}

#[actix_web::test]
async fn an_execution_interrupted_by_a_stop_gets_its_end_snapshot_at_the_next_start() {
    let d = spawn_with(|c| c.shutdown_grace = Duration::from_millis(200)).await;
    let repo = Repo::new(&[("a.txt", "a\n")]);
    let execution = d.exec_in(&repo.path(), "echo before > made.txt; sleep 30").await;
    let id = execution["id"].clone();
    let made = repo.path().join("made.txt");
    wait_until("made.txt", Duration::from_secs(30), || async { made.exists().then_some(()) }).await;
    let d = d.restart().await;
    let done = d.wait_changes_recorded(&id).await;
    assert_eq!(done["status"], "interrupted");
    assert_eq!(done["changes"]["totals"]["files"], 1, "{done}");
    let report = d.changed_files(&id).await;
    assert_eq!(report["changes"]["files"][0]["path"], "made.txt");
}

#[actix_web::test]
async fn warden_never_runs_a_program_the_repository_configures() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("a.txt", "one\n"), (".gitattributes", "* filter=evil diff=evil\n")]);
    let marks = tempfile::tempdir().unwrap();
    let hook = marks.path().join("hook.sh");
    let ran = marks.path().join("ran");
    // Each configured program leaves a mark and passes its input through.
    std::fs::write(&hook, format!("#!/bin/sh\necho \"$0 $*\" >> {}\ncat\n", ran.display())).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    let hook = hook.display().to_string();
    for (key, value) in [
        ("core.fsmonitor", hook.as_str()),
        ("filter.evil.clean", hook.as_str()),
        ("filter.evil.smudge", hook.as_str()),
        ("diff.evil.textconv", hook.as_str()),
        ("diff.external", hook.as_str()),
        ("core.pager", hook.as_str()),
    ] {
        repo.git(&["config", key, value]);
    }
    repo.write("a.txt", "one\n"); // untouched by the config change itself

    let execution = d.exec_in(&repo.path(), "echo two >> a.txt && echo new > b.txt").await;
    let id = &execution["id"];
    let done = d.wait_changes_recorded(id).await;
    assert!(done["changes"]["end_tree"].is_string(), "{done}");
    let files = d.changed_files(id).await;
    assert_eq!(files["changes"]["totals"]["files"], 2, "{files}");
    let diff = d.diff(id, "").await.text().await.unwrap();
    assert!(diff.contains("+two"), "{diff}");
    assert!(!ran.exists(), "warden ran a program of the repository: {}", std::fs::read_to_string(&ran).unwrap());

    // The same work done by a plain git (a temporary index, as warden's snapshot does)
    // runs them: the configuration is a real attack.
    let index = marks.path().join("index");
    let status = std::process::Command::new("git")
        .args(["add", "-A"])
        .current_dir(repo.path())
        .env("GIT_INDEX_FILE", &index)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(ran.exists(), "a plain git should have run the repository's programs");
}

#[actix_web::test]
async fn warden_show_says_what_an_execution_changed_and_what_it_asked() {
    let d = spawn_for_executions().await;
    let repo = Repo::new(&[("a.txt", "one\n")]);
    let execution = d.exec_in(&repo.path(), "echo two >> a.txt").await;
    let id = execution["id"].clone();
    d.wait_changes_recorded(&id).await;
    let asked = json!({"title": "push to main?", "execution_id": id});
    let approval = expect_json(d.post("/api/v1/approvals", &asked).await, StatusCode::CREATED).await;
    expect_json(
        d.post(&format!("/api/v1/approvals/{}", approval["id"]), &json!({"decision": "deny"})).await,
        StatusCode::OK,
    )
    .await;

    let shown = warden(d.home.dir(), &["show", &id.to_string()]).await;
    let text = stdout(&shown);
    assert!(text.contains("changes:   +1 −0 in 1 file\n"), "{text}");
    assert!(text.contains(&format!("approval:  {} denied by owner (owner): push to main?", approval["id"])), "{text}");
    let json: Value =
        serde_json::from_slice(&warden(d.home.dir(), &["show", &id.to_string(), "--json"]).await.stdout).unwrap();
    assert_eq!(json["changes"]["totals"]["additions"], 1);
    assert_eq!(json["approvals"][0]["title"], "push to main?");
}
