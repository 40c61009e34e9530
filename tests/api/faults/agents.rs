//! Agents that flood hundreds of megabytes, fork hundreds of children or close their
//! output early.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Processes (not yet reaped zombies aside) in a process group.
fn group_members(pgid: i64) -> Vec<i64> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
            // state, ppid, pgrp
            fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X")
        })
        .collect()
}

#[actix_web::test]
async fn an_agent_that_floods_hundreds_of_megabytes_leaves_the_daemon_small() {
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    // A dashboard follows it live meanwhile.
    let (mut follower, _) = d.ws().await;
    let idle = d.rss_mib();
    const LINE: usize = 16_000;
    const LINES: usize = 12_500; // 200 MB
    let script = format!("head -c {} /dev/zero | tr '\\0' x | fold -w {LINE}", LINE * LINES);
    let flood = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    follower.send_json(json!({ "type": "subscribe", "topics": ["execution.*"], "execution_id": flood["id"] })).await;
    let mut peak = idle;
    // The write-ahead log starts over while the writes keep coming, rather than growing
    // by all 200 MB.
    let wal = dir.path().join("home/warden.db-wal");
    let mut peak_wal = 0;
    let ended = wait_until("the flood to end", Duration::from_secs(120), || {
        peak = peak.max(d.rss_mib());
        peak_wal = peak_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        let d = &d;
        let id = flood["id"].clone();
        async move {
            let e = d.execution(&id).await;
            (e["status"] != "running" && e["status"] != "queued").then_some(e)
        }
    })
    .await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert!(peak < 100.0, "the daemon grew to {peak:.0} MiB (idle {idle:.0} MiB) for 200 MB of output");
    assert!(peak_wal <= 64 << 20, "the WAL grew to {} MiB for 200 MB of output", peak_wal >> 20);
    let last = d.get_ok(&format!("/api/v1/executions/{}/output?tail=1", flood["id"])).await;
    assert_eq!(last["items"][0]["n"], LINES, "every line is kept");
    assert_eq!(last["items"][0]["text"].as_str().unwrap().len(), LINE);
    let events = follower.events_until(|e| e["type"] == "execution.finished").await;
    assert!(!events.is_empty(), "the follower was told the flood ended");
}

#[actix_web::test]
async fn an_agent_that_forks_hundreds_of_children_is_reaped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    // Agents cannot create files beside the data dir (the sandbox), only in a directory there.
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    let leader = dir.path().join("work/leader");

    // The leader leaves 300 children behind when it exits.
    let script = format!("echo $$ > {}; for i in $(seq 1 300); do sleep 600 & done; echo forked", leader.display());
    let left = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    let ended = d.wait_final(&left["id"]).await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let pgid = read_pid_file(&leader).await;
    wait_until("the 300 children to be killed", Duration::from_secs(20), || {
        std::future::ready(group_members(pgid).is_empty().then_some(()))
    })
    .await;

    // The leader waits for its 300 children and is cancelled.
    std::fs::remove_file(&leader).unwrap();
    let script =
        format!("echo $$ > {}; for i in $(seq 1 300); do sleep 600 & done; echo forked; wait", leader.display());
    let waiting = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    let pgid = read_pid_file(&leader).await;
    wait_until("300 children", Duration::from_secs(20), || {
        std::future::ready((group_members(pgid).len() > 300).then_some(()))
    })
    .await;
    expect_json(d.post(&format!("/api/v1/executions/{}/cancel", waiting["id"]), &json!({})).await, StatusCode::OK)
        .await;
    let ended = d.wait_final(&waiting["id"]).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    wait_until("the group to be gone", Duration::from_secs(20), || {
        std::future::ready(group_members(pgid).is_empty().then_some(()))
    })
    .await;
}

#[actix_web::test]
async fn an_agent_that_closes_its_output_early_runs_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    let go = dir.path().join("go");
    let script = format!(
        "echo first; exec 1>&-; echo on-stderr >&2; exec 2>&-; while [ ! -e {} ]; do sleep 0.02; done; exit 7",
        go.display()
    );
    let e = d.exec_with(json!({ "prompt": script, "cwd": dir.path() })).await;
    wait_until("both lines", Duration::from_secs(20), || async {
        (d.output_text(&e["id"]).await == "first\non-stderr").then_some(())
    })
    .await;
    // Both pipes are closed, and the process still runs: so does the execution.
    assert_eq!(d.execution(&e["id"]).await["status"], "running");
    std::fs::write(&go, "").unwrap();
    let ended = d.wait_final(&e["id"]).await;
    assert_eq!((ended["status"].as_str(), ended["exit_code"].as_i64()), (Some("failed"), Some(7)), "{ended}");
}
