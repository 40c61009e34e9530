//! Live events: WebSocket and SSE clients, replay after reconnect, filters, the client
//! limit, backpressure and heartbeats.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Every stored event after `since`, from the history endpoint.
async fn history(d: &TestDaemon, since: u64) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = since;
    loop {
        let page = d.get_ok(&format!("/api/v1/events/history?since={after}&limit=1000")).await;
        events.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => after = cursor.parse().unwrap(),
            None => return events,
        }
    }
}

#[actix_web::test]
async fn a_reconnecting_client_gets_every_missed_event_once_in_order_then_live() {
    let d = spawn_for_executions().await;
    let (mut first, hello) = d.ws().await;
    assert!(hello["client_id"].is_string());
    let start = hello["last_seq"].as_u64().unwrap();
    first.send_json(json!({"type": "subscribe", "topics": ["*"], "since": start})).await;
    let one = d.exec("echo one").await["id"].clone();
    let seen = first.events_until(|e| e["type"] == "execution.finished" && e["execution_id"] == one).await;
    let last_seen = *seqs(&seen).last().unwrap();
    drop(first);

    // Published while nobody listened.
    let two = d.exec("echo two").await["id"].clone();
    d.wait_final(&two).await;
    let dir = tempfile::tempdir().unwrap();
    d.post("/api/v1/workspaces", &json!({"name": "between", "path": dir.path()})).await;

    let (mut second, _) = d.ws().await;
    second.send_json(json!({"type": "subscribe", "topics": ["*"], "since": last_seen})).await;
    let missed = second.events_until(|e| e["type"] == "workspace.created").await;
    let stored: Vec<Value> = history(&d, last_seen).await;
    assert_eq!(seqs(&missed), seqs(&stored), "replay is exactly what the log has after the last seen event");
    assert!(missed.iter().any(|e| e["type"] == "execution.output" && e["data"]["text"] == "two"));

    // And then live, with no gap.
    let three = d.exec("echo three").await["id"].clone();
    let live = second.events_until(|e| e["type"] == "execution.finished" && e["execution_id"] == three).await;
    let all: Vec<u64> = seqs(&missed).into_iter().chain(seqs(&live)).collect();
    let expected: Vec<u64> = seqs(&history(&d, last_seen).await);
    assert_eq!(all, expected, "replay then live: every event once, in order");
    assert!(all.windows(2).all(|w| w[0] < w[1]));
}

#[actix_web::test]
async fn events_replay_then_go_live_while_events_keep_coming() {
    let d = spawn_for_executions().await;
    // Output flows during the subscription, so the switch from replay to live is raced.
    let id = d.exec("for i in $(seq 1 3000); do echo line $i; done").await["id"].clone();
    let (mut client, _) = d.ws().await;
    client.send_json(json!({"type": "subscribe", "topics": ["execution.*"], "execution_id": id, "since": 0})).await;
    let (numbers, _) = client.output_lines(&d, &id).await;
    assert_all_lines(&numbers, 3000);
}

#[actix_web::test]
async fn a_filtered_client_gets_only_what_it_asked_for() {
    let d = spawn_for_executions().await;
    let (mut finished_only, _) = d.ws().await;
    finished_only.send_json(json!({"type": "subscribe", "topics": ["execution.finished", "workspace.*"]})).await;
    let (mut approvals, _) = d.ws().await;
    approvals.send_json(json!({"type": "subscribe", "topics": ["approval.*"]})).await;
    let (mut one_execution, _) = d.ws().await;

    let first = d.exec("echo noisy; echo noisy").await["id"].clone();
    one_execution.send_json(json!({"type": "subscribe", "topics": ["*"], "execution_id": first, "since": 0})).await;
    d.wait_final(&first).await;
    let second = d.exec("echo other").await["id"].clone();
    d.wait_final(&second).await;
    let dir = tempfile::tempdir().unwrap();
    d.post("/api/v1/workspaces", &json!({"name": "marker", "path": dir.path()})).await;

    let got = finished_only.events_until(|e| e["type"] == "workspace.created").await;
    let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["execution.finished", "execution.finished", "workspace.created"]);

    let mine = one_execution.events_until(|e| e["type"] == "execution.finished").await;
    assert!(mine.iter().all(|e| e["execution_id"] == first), "only execution {first}");
    assert_eq!(mine.iter().filter(|e| e["type"] == "execution.output").count(), 2);

    // The approvals client heard nothing: the next frame it gets is our own probe's error.
    approvals.send_json(json!({"type": "nonsense"})).await;
    let next = approvals.next_json().await.unwrap();
    assert_eq!(next["type"], "error", "no execution event reached an approval.* client: {next}");
}

#[actix_web::test]
async fn bad_client_messages_get_errors_and_the_connection_stays() {
    let d = spawn_for_executions().await;
    let (mut client, _) = d.ws().await;
    for (message, code) in [
        (json!({"type": "subscribe", "topics": ["Bad Topic"]}), "invalid_topic"),
        (json!({"type": "subscribe", "topics": []}), "invalid_topic"),
        (json!({"type": "dance"}), "invalid_message"),
        (json!({"type": "subscribe", "topics": ["*"], "extra": 1}), "invalid_message"),
    ] {
        client.send_json(message).await;
        let error = client.next_json().await.unwrap();
        assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some(code)), "{error}");
    }
    use futures_util::SinkExt;
    client.stream.send(tokio_tungstenite::tungstenite::Message::Text("{not json".into())).await.unwrap();
    assert_eq!(client.next_json().await.unwrap()["code"], "invalid_message");
    client.send_json(json!({"type": "subscribe", "topics": ["execution.*"]})).await;
    let id = d.exec("true").await["id"].clone();
    let events = client.events_until(|e| e["type"] == "execution.finished").await;
    assert_eq!(events.last().unwrap()["execution_id"], id, "still subscribed and working");
}

#[actix_web::test]
async fn the_websocket_needs_the_token_and_accepts_it_in_the_query() {
    let d = spawn_for_executions().await;
    let url = format!("{}/api/v1/ws", d.base_url.replace("http://", "ws://"));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let (mut client, _) = tokio_tungstenite::connect_async(format!("{url}?token={}", d.token)).await.unwrap();
    use futures_util::StreamExt;
    let hello = client.next().await.unwrap().unwrap();
    assert!(hello.to_text().unwrap().contains("\"hello\""));
}

#[actix_web::test]
async fn the_eleventh_client_is_refused_until_one_leaves() {
    // A vanished SSE client is noticed at the next write: keep-alives make that soon.
    let d = spawn_with(|c| c.heartbeat.sse_keepalive = Duration::from_millis(100)).await;
    let mut websockets = Vec::new();
    for _ in 0..6 {
        websockets.push(d.ws().await.0);
    }
    let mut streams = Vec::new();
    for _ in 0..4 {
        let response = d.get("/api/v1/events").await;
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response);
    }
    let refused = d.get("/api/v1/events").await;
    expect_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "too_many_clients").await;
    match d.try_ws().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("the 11th WebSocket must be refused before the upgrade, got {:?}", other.map(|_| ())),
    }
    let status = d.get_ok("/api/v1/status").await;
    assert_eq!(status["counts"]["clients"]["connected"], 10);

    drop(websockets.pop());
    let (_eleventh, hello) = wait_until("a free slot", Duration::from_secs(10), || async {
        let client = d.try_ws().await.ok()?;
        let mut client = client;
        let hello = client.next_json().await?;
        Some((client, hello))
    })
    .await;
    assert_eq!(hello["type"], "hello");
    drop(streams.pop());
    wait_until("an SSE slot", Duration::from_secs(10), || async {
        let response = d.get("/api/v1/events").await;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn sse_streams_events_with_ids_and_resumes_after_last_event_id() {
    let d = spawn_for_executions().await;
    let response = d.get("/api/v1/events?topics=execution.*").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let id = d.exec("echo via sse").await["id"].clone();
    let messages = read_sse(response, |event, _| event == "execution.finished").await;
    let kinds: Vec<&str> = messages.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["execution.created", "execution.queued", "execution.started", "execution.output", "execution.finished"]
    );
    for (seq, _, data) in &messages {
        let envelope: Value = serde_json::from_str(data).unwrap();
        assert_eq!(envelope["seq"].as_u64(), *seq, "id: is the seq");
        assert_eq!(envelope["execution_id"], id);
    }

    // Resume after the third event: the rest, and nothing before it.
    let third = messages[2].0.unwrap();
    let resumed = d
        .request(Method::GET, "/api/v1/events?topics=execution.*&since=0")
        .header("Last-Event-ID", third.to_string())
        .send()
        .await
        .unwrap();
    let rest = read_sse(resumed, |event, _| event == "execution.finished").await;
    assert_eq!(
        rest.iter().map(|m| m.0.unwrap()).collect::<Vec<_>>(),
        messages[3..].iter().map(|m| m.0.unwrap()).collect::<Vec<_>>()
    );

    let bad = d.request(Method::GET, "/api/v1/events").header("Last-Event-ID", "yesterday").send().await.unwrap();
    expect_problem(bad, StatusCode::BAD_REQUEST, "invalid_request").await;
    expect_problem(d.get("/api/v1/events?topics=BAD").await, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[actix_web::test]
async fn sse_sends_keepalive_comments() {
    let d = spawn_with(|c| c.heartbeat.sse_keepalive = Duration::from_millis(200)).await;
    let response = d.get("/api/v1/events?topics=approval.*").await;
    let messages = read_sse(response, |event, _| event == "comment").await;
    assert_eq!(messages.last().unwrap().2, ": keepalive");
}

#[actix_web::test]
async fn an_execution_stream_has_history_then_live_then_end() {
    let d = spawn_for_executions().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("go");
    let script = format!("echo before; while [ ! -e {} ]; do sleep 0.02; done; echo after", gate.display());
    let id = d.exec(&script).await["id"].clone();
    wait_until("the first line", Duration::from_secs(10), || async { (!d.output(&id).await.is_empty()).then_some(()) })
        .await;

    let response = d.get(&format!("/api/v1/executions/{id}/stream")).await;
    std::fs::write(&gate, "").unwrap();
    let messages = read_sse(response, |_, _| false).await;
    let kinds: Vec<&str> = messages.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "execution.created",
            "execution.queued",
            "execution.started",
            "execution.output",
            "execution.output",
            "execution.finished",
            "end"
        ]
    );
    let end: Value = serde_json::from_str(&messages.last().unwrap().2).unwrap();
    assert_eq!((end["id"].clone(), end["status"].as_str()), (id.clone(), Some("succeeded")));

    // Resuming after its end: just the end.
    let finished_seq = messages[5].0.unwrap();
    let resumed = d
        .request(Method::GET, &format!("/api/v1/executions/{id}/stream"))
        .header("Last-Event-ID", finished_seq.to_string())
        .send()
        .await
        .unwrap();
    let after = read_sse(resumed, |_, _| false).await;
    assert_eq!(after.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(), vec!["end"]);
    // Resuming in the middle: the rest, then the end.
    let middle = messages[3].0.unwrap();
    let resumed = d
        .request(Method::GET, &format!("/api/v1/executions/{id}/stream"))
        .header("Last-Event-ID", middle.to_string())
        .send()
        .await
        .unwrap();
    let rest = read_sse(resumed, |_, _| false).await;
    assert_eq!(
        rest.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(),
        vec!["execution.output", "execution.finished", "end"]
    );

    expect_problem(d.get("/api/v1/executions/999/stream").await, StatusCode::NOT_FOUND, "not_found").await;
}

#[actix_web::test]
async fn a_silent_websocket_client_is_dropped_by_the_heartbeat() {
    let d = spawn_with(|c| {
        c.heartbeat.ping_interval = Duration::from_millis(100);
        c.heartbeat.client_timeout = Duration::from_millis(400);
    })
    .await;
    // Connected, then silent: it never reads, so it never answers a ping.
    let (silent, _) = d.ws().await;
    assert_eq!(d.get_ok("/api/v1/status").await["counts"]["clients"]["connected"], 1);
    wait_until("the silent client to be dropped", Duration::from_secs(10), || async {
        (d.get_ok("/api/v1/status").await["counts"]["clients"]["connected"] == 0).then_some(())
    })
    .await;
    drop(silent);

    // A client that reads (and so answers pings) stays.
    let (mut lively, _) = d.ws().await;
    lively.send_json(json!({"type": "subscribe", "topics": ["workspace.*"]})).await;
    let reader = actix_web::rt::spawn(async move { lively.events_until(|e| e["type"] == "workspace.created").await });
    // Three timeouts long: a client that answers pings is never dropped in that window.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(d.get_ok("/api/v1/status").await["counts"]["clients"]["connected"], 1, "kept alive by its pongs");
    let dir = tempfile::tempdir().unwrap();
    d.post("/api/v1/workspaces", &json!({"name": "ping", "path": dir.path()})).await;
    let events = reader.await.unwrap();
    assert_eq!(events.len(), 1);
}

#[actix_web::test]
async fn a_client_that_stops_reading_is_skipped_or_dropped_and_the_others_get_everything() {
    let d = spawn_for_executions().await;
    let (mut fast, _) = d.ws().await;
    fast.send_json(json!({"type": "subscribe", "topics": ["execution.*"]})).await;
    let (mut slow, _) = d.ws().await;
    slow.send_json(json!({"type": "subscribe", "topics": ["execution.*"]})).await;
    // Both are subscribed once an event reaches both.
    let probe = d.exec("true").await["id"].clone();
    fast.events_until(|e| e["type"] == "execution.finished" && e["execution_id"] == probe).await;
    slow.events_until(|e| e["type"] == "execution.finished" && e["execution_id"] == probe).await;

    // The slow client stops reading while 100,000 lines flow. The reading client gets
    // every line (live, or refetched where a burst outran it) without waiting for it.
    let id = d.exec("seq 1 100000").await["id"].clone();
    let (lines, _) = fast.output_lines(&d, &id).await;
    assert_all_lines(&lines, 100_000);

    let counts = d.get_ok("/api/v1/status").await["counts"]["clients"].clone();
    let skipped = counts["events_skipped"].as_u64().unwrap();
    let dropped = counts["clients_dropped"].as_u64().unwrap();
    assert!(skipped > 0 || dropped > 0, "the slow client was skipped or dropped: {counts}");

    // When the slow one reads again it learns what it missed (or finds itself dropped),
    // and it still gets every normal event.
    let mut told = false;
    let mut finished = false;
    while let Some(message) = slow.next_json().await {
        if message["type"] == "skipped" {
            assert!(message["count"].as_u64().unwrap() > 0);
            assert!(message["from_seq"].as_u64() <= message["to_seq"].as_u64());
            told = true;
        }
        if message["type"] == "event"
            && message["event"]["type"] == "execution.finished"
            && message["event"]["execution_id"] == id
        {
            finished = true;
            break;
        }
    }
    assert!(told || dropped > 0, "a skipping client is told how many it missed");
    assert!(finished || dropped > 0, "normal events are never skipped");
}

#[actix_web::test]
async fn seq_continues_after_a_restart() {
    let d = spawn_for_executions().await;
    d.wait_final(&d.exec("echo before").await["id"]).await;
    let before = history(&d, 0).await;
    let last = *seqs(&before).last().unwrap();
    assert!(before.iter().any(|e| e["type"] == "daemon.started"));
    let d = d.restart().await;
    let (_, hello) = d.ws().await;
    assert!(hello["last_seq"].as_u64().unwrap() > last, "the stop and start were recorded after it");
    let after = history(&d, last).await;
    let kinds: Vec<&str> = after.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["daemon.stopping", "daemon.started"]);
    assert_eq!(after[0]["priority"], "high");
    let all = seqs(&history(&d, 0).await);
    assert!(all.windows(2).all(|w| w[0] < w[1]), "strictly increasing, no duplicate");
}

#[actix_web::test]
async fn history_pages_through_the_log_with_filters() {
    let d = spawn_for_executions().await;
    for _ in 0..3 {
        d.wait_final(&d.exec("echo x").await["id"]).await;
    }
    let page = d.get_ok("/api/v1/events/history?topics=execution.finished&limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = d.get_ok(&format!("/api/v1/events/history?topics=execution.finished&since={cursor}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    let output = d.get_ok("/api/v1/events/history?topics=execution.output&execution_id=2").await;
    assert_eq!(output["items"].as_array().unwrap().len(), 1);
    assert_eq!(output["items"][0]["data"]["text"], "x");
    expect_problem(d.get("/api/v1/events/history?limit=0").await, StatusCode::BAD_REQUEST, "invalid_request").await;
}
