//! Retention on a real daemon: 2,000 executions with output, aged in the database the
//! way months of use would leave them, pruned by age with `keep_last` as the floor, by
//! size, and one by one (`DELETE`, `warden rm`); replays and history pages across what
//! was removed say so; the daemon answers reads and streams throughout; snapshot objects
//! only pruned executions needed are swept, and a kept execution's diff still works.

use std::time::{Duration, SystemTime};

use futures_util::{stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::changes::Repo;
use crate::helpers::*;

const RETENTION_OFF: &str = "[retention]\nenabled = false\n";

/// Runs `count` executions of `prompt`, 16 requests at a time; waits until all are final.
/// Their ids, in order.
async fn run_many(d: &Api, count: usize, prompt: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = stream::iter(0..count)
        .map(|_| async { d.exec(prompt).await["id"].as_i64().unwrap() })
        .buffered(16)
        .collect()
        .await;
    ids.sort();
    wait_until("every execution to end", Duration::from_secs(120), || async {
        let counts = d.get_ok("/api/v1/status").await["counts"].clone();
        let unfinished = counts["executions_queued"].as_u64().unwrap() + counts["executions_running"].as_u64().unwrap();
        (unfinished == 0).then_some(())
    })
    .await;
    d.wait_final(&json!(ids[count - 1])).await;
    ids
}

/// Sets the end of executions up to `last` `days` back, as if they had ended then (the
/// daemon is stopped).
fn age(home: &warden::home::Home, last: i64, days: i64) {
    let conn = rusqlite::Connection::open(home.db_path()).unwrap();
    let then = (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    conn.execute("UPDATE executions SET finished_at = ?1 WHERE id <= ?2", rusqlite::params![then, last]).unwrap();
}

fn file_size(home: &warden::home::Home) -> u64 {
    std::fs::metadata(home.db_path()).unwrap().len()
}

#[actix_web::test]
async fn old_output_is_pruned_the_newest_are_kept_whole_and_replays_mark_the_gap() {
    let d = spawn_with_config_file(&format!("{RETENTION_OFF}keep_last = 200\n")).await;
    d.set_limits("local", 8, 0).await;
    let ids = run_many(&d, 2000, "seq 1 20").await;
    let stopped = d.stop().await;
    // Executions 1-1,900 ended 40 days ago; the newest 200 are kept whatever their age.
    let (first, oldest_kept) = (ids[0], ids[1801]);
    age(&stopped.home, ids[1899], 40);
    let d = stopped.start().await;
    d.set_limits("local", 8, 0).await;
    // One more, streaming while the pass runs: it is among the newest 200 now, and the
    // oldest of the 200 before it is not.
    let streaming = d.exec("for i in $(seq 1 300); do echo line $i; sleep 0.01; done").await;
    let stream = d.get(&format!("/api/v1/executions/{}/stream", streaming["id"])).await;
    let reader = actix_web::rt::spawn(async move { read_sse(stream, |event, _| event == "end").await });

    let dry = expect_json(d.post("/api/v1/prune?dry_run=true", &json!({})).await, StatusCode::OK).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["executions"], 1801, "{dry}");
    assert_eq!(dry["output_lines"], 1801 * 20, "{dry}");
    assert_eq!(d.execution(&json!(first)).await["pruned_at"], Value::Null, "a dry run prunes nothing");
    assert_eq!(d.output(&json!(first)).await.len(), 20);

    // While it prunes, the execution streams its lines and reads go on.
    let size_before = file_size(&d.home);
    let empty = json!({});
    let prune = d.post("/api/v1/prune", &empty);
    let reads = async {
        let mut answered = 0;
        for _ in 0..20 {
            let page = d.get_ok("/api/v1/executions?limit=50").await;
            assert_eq!(page["items"].as_array().unwrap().len(), 50);
            answered += 1;
        }
        answered
    };
    let (report, answered) = tokio::join!(prune, reads);
    let report = expect_json(report, StatusCode::OK).await;
    assert_eq!(answered, 20);
    assert_eq!(report["executions"], 1801, "{report}");
    assert_eq!(report["output_lines"], 1801 * 20, "{report}");
    assert!(report["events"].as_u64().unwrap() >= 1801 * 3, "{report}");
    let (before, after) =
        (report["database_bytes_before"].as_u64().unwrap(), report["database_bytes_after"].as_u64().unwrap());
    assert!(after < before, "the file gives the space back: {report}");
    assert!(file_size(&d.home) < size_before, "the database file is smaller on disk");
    let streamed = reader.await.unwrap();
    let lines: Vec<String> = streamed
        .iter()
        .filter(|(_, event, _)| event == "execution.output")
        .map(|(_, _, data)| serde_json::from_str::<Value>(data).unwrap()["data"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(lines, (1..=300).map(|i| format!("line {i}")).collect::<Vec<_>>(), "the stream lost nothing");

    // A pruned execution keeps its row, says so, and its output is gone.
    let pruned = d.execution(&json!(first)).await;
    assert_eq!(pruned["status"], "succeeded");
    assert_eq!(pruned["exit_code"], 0);
    assert!(pruned["pruned_at"].is_string(), "{pruned}");
    let page = d.get_ok(&format!("/api/v1/executions/{first}/output")).await;
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["pruned_at"], pruned["pruned_at"]);
    let listed = d.get_ok(&format!("/api/v1/executions?limit=1&cursor={}", first + 1)).await;
    assert_eq!(listed["items"][0]["pruned_at"], pruned["pruned_at"], "lists show it too");
    let logs = warden(d.home.dir(), &["logs", &first.to_string()]).await;
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(stdout(&logs), "");
    assert!(stderr(&logs).contains("output was removed by retention"), "{}", stderr(&logs));
    // Old but among the newest 200, and new: whole.
    for id in [oldest_kept, ids[1899], ids[1999]] {
        assert_eq!(d.execution(&json!(id)).await["pruned_at"], Value::Null);
        let texts: Vec<String> =
            d.output(&json!(id)).await.iter().map(|l| l["text"].as_str().unwrap().to_owned()).collect();
        assert_eq!(texts, (1..=20).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    // History pages and replays across the pruned range say so.
    let history = d.get_ok("/api/v1/events/history?since=0&limit=100").await;
    let range = &history["pruned"][0];
    assert_eq!(range["executions"], 1801, "{history}");
    assert_eq!(range["reason"], "retention");
    let (from, to) = (range["from_seq"].as_u64().unwrap(), range["to_seq"].as_u64().unwrap());
    assert!(history["items"].as_array().unwrap().iter().all(|e| {
        let seq = e["seq"].as_u64().unwrap();
        seq < from || seq > to || e["execution_id"].as_i64().is_none_or(|id| id > ids[1800])
    }));
    let one = d.get(&format!("/api/v1/executions/{first}/stream")).await;
    let replayed = read_sse(one, |event, _| event == "end").await;
    let kinds: Vec<&str> = replayed.iter().map(|(_, event, _)| event.as_str()).collect();
    assert_eq!(kinds, ["pruned", "end"], "{replayed:?}");
    let notice: Value = serde_json::from_str(&replayed[0].2).unwrap();
    assert_eq!(notice["type"], "pruned");
    assert_eq!(notice["execution_id"], first);
    let (mut ws, _) = d.ws().await;
    ws.send_json(json!({"type": "subscribe", "topics": ["*"], "since": 0})).await;
    let notice = loop {
        let frame = ws.next_json().await.expect("the connection stays open, and the notice comes");
        if frame["type"] == "pruned" {
            break frame;
        }
    };
    assert_eq!((notice["from_seq"].as_u64(), notice["to_seq"].as_u64()), (Some(from), Some(to)));

    // Pruning again finds nothing; a restart keeps what was pruned.
    let again = expect_json(d.post("/api/v1/prune", &json!({})).await, StatusCode::OK).await;
    assert_eq!(again["executions"], 0, "{again}");
    let d = d.restart().await;
    assert!(d.execution(&json!(first)).await["pruned_at"].is_string());
    assert_eq!(d.output(&json!(ids[1999])).await.len(), 20);
}

#[actix_web::test]
async fn past_max_db_mb_the_oldest_lose_their_output_whatever_their_age() {
    let d = spawn_with_config_file(&format!("{RETENTION_OFF}keep_last = 1\nmax_db_mb = 2\n")).await;
    // Four executions of about 1.4 MB of output each, all new.
    let ids = run_many(&d, 4, "yes 'a line of output, long enough to count for something' | head -n 25000").await;
    let report = expect_json(d.post("/api/v1/prune", &json!({})).await, StatusCode::OK).await;
    assert!(report["executions"].as_u64().unwrap() >= 2, "{report}");
    assert!(report["database_bytes_after"].as_u64().unwrap() <= 2 << 20, "{report}");
    assert!(d.execution(&json!(ids[0])).await["pruned_at"].is_string(), "the oldest went first");
    assert_eq!(d.execution(&json!(ids[3])).await["pruned_at"], Value::Null, "the newest is kept");
    assert_eq!(d.output(&json!(ids[3])).await.len(), 25_000);
}

#[actix_web::test]
async fn delete_removes_a_final_execution_only_for_the_owner_and_never_a_running_one() {
    let d = spawn_for_executions().await;
    let done = d.exec("seq 1 5").await;
    d.wait_final(&done["id"]).await;
    let other = d.exec("echo other").await;
    d.wait_final(&other["id"]).await;

    // The agent of a running execution holds a token; it cannot delete.
    let agent = d.exec("echo $WARDEN_TOKEN; sleep 30").await;
    let token = wait_until("the agent token", Duration::from_secs(10), || async {
        d.output(&agent["id"]).await.first().map(|l| l["text"].as_str().unwrap().to_owned())
    })
    .await;
    let path = format!("/api/v1/executions/{}", done["id"]);
    let refused = d.client.delete(d.url(&path)).bearer_auth(&token).send().await.unwrap();
    expect_problem(refused, StatusCode::FORBIDDEN, "forbidden_scope").await;
    let refused = d.client.post(d.url("/api/v1/prune")).bearer_auth(&token).json(&json!({})).send().await.unwrap();
    expect_problem(refused, StatusCode::FORBIDDEN, "forbidden_scope").await;
    assert_eq!(d.output(&done["id"]).await.len(), 5, "the agent's attempt changed nothing");

    // A running execution is not deleted, and stays as it was.
    let running = d.delete(&format!("/api/v1/executions/{}", agent["id"])).await;
    let problem = expect_problem(running, StatusCode::CONFLICT, "not_final").await;
    assert_eq!(problem["current_status"], "running");
    assert_eq!(d.execution(&agent["id"]).await["status"], "running");

    // The owner's same request deletes it: gone, and a replay says so.
    let removed = expect_json(d.delete(&path).await, StatusCode::OK).await;
    assert_eq!(removed["output_lines"], 5);
    expect_problem(d.get(&path).await, StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(d.delete(&path).await, StatusCode::NOT_FOUND, "not_found").await;
    let history = d.get_ok(&format!("/api/v1/events/history?since=0&execution_id={}", done["id"])).await;
    let kinds: Vec<&str> = history["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["execution.deleted"], "{history}");
    assert_eq!(history["pruned"][0]["reason"], "deleted");
    assert_eq!(history["pruned"][0]["execution_id"], done["id"]);
    assert_eq!(d.output(&other["id"]).await.len(), 1, "the others are untouched");

    // warden rm: the final one goes, the running one is named and the exit status is 1.
    let out = warden(d.home.dir(), &["rm", &other["id"].to_string(), &agent["id"].to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("{}: deleted", other["id"])), "{}", stdout(&out));
    assert!(stderr(&out).contains("only a final execution can be deleted"), "{}", stderr(&out));
    expect_problem(d.get(&format!("/api/v1/executions/{}", other["id"])).await, StatusCode::NOT_FOUND, "not_found")
        .await;
    expect_json(d.post(&format!("/api/v1/executions/{}/cancel", agent["id"]), &json!({})).await, StatusCode::OK).await;

    // warden prune says what it would free, and what it freed.
    let dry = warden(d.home.dir(), &["prune", "--dry-run"]).await;
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("0 execution(s): 0 output lines") && stdout(&dry).contains("would free"),
        "{}",
        stdout(&dry)
    );
    let done = warden(d.home.dir(), &["prune", "--json"]).await;
    let report: Value = serde_json::from_str(&stdout(&done)).unwrap_or_else(|_| panic!("{}", stdout(&done)));
    assert_eq!((report["dry_run"].as_bool(), report["executions"].as_u64()), (Some(false), Some(0)));
}

/// Makes every loose object in warden's object directory look `age` old.
fn backdate_objects(home: &warden::home::Home, age: Duration) {
    let then = SystemTime::now() - age;
    for dir in std::fs::read_dir(home.git_dir().join("objects")).unwrap().flatten() {
        for file in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            std::fs::File::options().write(true).open(file.path()).unwrap().set_modified(then).unwrap();
        }
    }
}

fn loose_objects(home: &warden::home::Home) -> usize {
    std::fs::read_dir(home.git_dir().join("objects"))
        .unwrap()
        .flatten()
        .map(|dir| std::fs::read_dir(dir.path()).into_iter().flatten().count())
        .sum()
}

#[actix_web::test]
async fn snapshot_objects_only_pruned_executions_needed_are_swept() {
    let repo = Repo::new(&[("kept.txt", "committed\n")]);
    let d = spawn_with_config_file(&format!("{RETENTION_OFF}keep_last = 1\n")).await;
    let run = |prompt: &str| d.exec_with(json!({"prompt": prompt, "cwd": repo.path()}));
    let old = run("echo an old untracked file > old.txt").await;
    d.wait_final(&old["id"]).await;
    wait_until("the old end snapshot", Duration::from_secs(20), || async {
        d.execution(&old["id"]).await["changes"]["end_tree"].is_string().then_some(())
    })
    .await;
    // The user deletes the file: only the old execution's end snapshot still has it.
    std::fs::remove_file(repo.path().join("old.txt")).unwrap();
    let kept = run("echo a new untracked file > new.txt; echo changed >> kept.txt").await;
    d.wait_final(&kept["id"]).await;
    wait_until("the end snapshots", Duration::from_secs(20), || async {
        let both = [d.execution(&old["id"]).await, d.execution(&kept["id"]).await];
        both.iter().all(|e| e["changes"]["end_tree"].is_string()).then_some(())
    })
    .await;
    let stopped = d.stop().await;
    age(&stopped.home, old["id"].as_i64().unwrap(), 40);
    backdate_objects(&stopped.home, Duration::from_secs(2 * 3600));
    let objects_before = loose_objects(&stopped.home);
    let d = stopped.start().await;

    let dry = expect_json(d.post("/api/v1/prune?dry_run=true", &json!({})).await, StatusCode::OK).await;
    assert_eq!(dry["executions"], 1, "{dry}");
    assert!(dry["snapshot_objects"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(loose_objects(&d.home), objects_before, "a dry run deletes nothing");
    let report = expect_json(d.post("/api/v1/prune", &json!({})).await, StatusCode::OK).await;
    assert_eq!(report["snapshot_objects"], dry["snapshot_objects"], "{report}");
    assert_eq!(loose_objects(&d.home), objects_before - dry["snapshot_objects"].as_u64().unwrap() as usize);

    // The kept execution's diff still reads every object it needs.
    let diff = d.get(&format!("/api/v1/executions/{}/diff", kept["id"])).await;
    let text = diff.text().await.unwrap();
    assert!(text.contains("+a new untracked file") && text.contains("+changed"), "{text}");
    // The pruned one says why it has none.
    let changes = d.get_ok(&format!("/api/v1/executions/{}/changes", old["id"])).await;
    assert!(changes["reason"].as_str().unwrap().contains("pruned"), "{changes}");
}

#[actix_web::test]
async fn a_prune_cut_short_by_a_crash_is_finished_by_the_next_pass() {
    let d = spawn_with_config_file(RETENTION_OFF).await;
    let half = d.exec("seq 1 300").await;
    d.wait_final(&half["id"]).await;
    let whole = d.exec("seq 1 3").await;
    d.wait_final(&whole["id"]).await;
    let stopped = d.stop().await;
    // As a pass leaves it when the daemon dies after recording the range and removing
    // part of the rows: the execution is marked, some of its output is still there.
    let conn = rusqlite::Connection::open(stopped.home.db_path()).unwrap();
    conn.execute_batch(&format!(
        "UPDATE executions SET pruned_at = '2026-01-01T00:00:00.000Z' WHERE id = {id};
         INSERT INTO pruned_ranges (execution_id, pass, reason, at, from_seq, to_seq, output_lines, events)
             SELECT {id}, 1, 'retention', '2026-01-01T00:00:00.000Z', min(first_seq), max(first_seq + lines - 1), 300, 0
             FROM output_chunks WHERE execution_id = {id};
         DELETE FROM output_chunks WHERE execution_id = {id} AND first_n = (SELECT min(first_n) FROM output_chunks WHERE execution_id = {id});",
        id = half["id"]
    ))
    .unwrap();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM output_chunks WHERE execution_id = ?1", [half["id"].as_i64()], |r| r.get(0))
        .unwrap();
    drop(conn);
    assert!(left >= 1, "300 lines take two chunks or more");
    let d = stopped.start().await;
    assert!(!d.output(&half["id"]).await.is_empty(), "the rest of its output is still there");

    let report = expect_json(d.post("/api/v1/prune", &json!({})).await, StatusCode::OK).await;
    assert_eq!(report["executions"], 0, "nothing new was old enough: {report}");
    assert_eq!(d.output(&half["id"]).await, Vec::<Value>::new(), "the cut-short prune was finished");
    assert_eq!(d.output(&whole["id"]).await.len(), 3, "the other is whole");
}

#[actix_web::test]
async fn a_sessions_replay_names_each_pruned_turn_and_keeps_the_conversation() {
    let d = spawn_with_config_file(&format!("{RETENTION_OFF}keep_last = 0\n")).await;
    let profile = json!({"name": "chat", "provider": "local", "command": ["sh", "-c", "echo said {prompt}"],
                         "continue_command": ["sh", "-c", "echo said {prompt} again"]});
    expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    let work = tempfile::tempdir().unwrap();
    let session = expect_json(
        d.post("/api/v1/sessions", &json!({"profile": "chat", "cwd": work.path()})).await,
        StatusCode::CREATED,
    )
    .await;
    let id = session["id"].clone();
    let mut turns = Vec::new();
    for text in ["one", "two"] {
        let sent = d.post(&format!("/api/v1/sessions/{id}/messages"), &json!({"content": text})).await;
        turns.push(expect_json(sent, StatusCode::ACCEPTED).await["execution"]["id"].clone());
        wait_until("the turn's reply", Duration::from_secs(20), || async {
            let session = d.get_ok(&format!("/api/v1/sessions/{id}")).await;
            (session["status"] == "idle" && session["turns"] == turns.len()).then_some(())
        })
        .await;
    }
    let stopped = d.stop().await;
    age(&stopped.home, turns[1].as_i64().unwrap(), 40);
    let d = stopped.start().await;
    let report = expect_json(d.post("/api/v1/prune", &json!({})).await, StatusCode::OK).await;
    assert_eq!(report["executions"], 2, "{report}");

    // Narrowed to the session: one range per pruned turn, each naming its execution.
    let history = d.get_ok(&format!("/api/v1/events/history?since=0&session_id={id}")).await;
    let named: Vec<Value> = history["pruned"].as_array().unwrap().iter().map(|r| r["execution_id"].clone()).collect();
    assert_eq!(named, turns, "{history}");
    let sse = d.get(&format!("/api/v1/events?session_id={id}&since=0")).await;
    let mut notices = Vec::new();
    read_sse(sse, |event, data| {
        if event == "pruned" {
            notices.push(serde_json::from_str::<Value>(data).unwrap()["execution_id"].clone());
        }
        notices.len() == 2
    })
    .await;
    assert_eq!(notices, turns);
    // The conversation itself (the session's messages) stays.
    let messages = d.get_ok(&format!("/api/v1/sessions/{id}/messages")).await;
    let said: Vec<&str> =
        messages["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(said, ["one", "said one", "two", "said two again"]);
}
