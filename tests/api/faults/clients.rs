//! Five hundred clients coming and going.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// One client's life, over and over until `until`: connect (WebSocket or SSE), read live
/// data for a second or two, leave (politely or by dropping the connection), rest a
/// moment. Returns how many times it got in. The stays keep hundreds connected at once;
/// the rests keep the connection rate (a few hundred a second) within what loopback's
/// ephemeral ports bear, so the tests running beside this one can still connect.
async fn churn(d: &Api, client: usize, until: std::time::Instant) -> u64 {
    use futures_util::StreamExt;
    let mut sessions: u64 = 0;
    let mut turn: u64 = 0;
    while std::time::Instant::now() < until {
        turn += 1;
        let varied = |base: u64| Duration::from_millis(base + (client as u64 * 37 + turn * 101) % base);
        let (stay, rest) = (varied(1000), varied(500));
        let got_in = if client.is_multiple_of(2) {
            match d.try_ws().await {
                Ok(mut ws) => {
                    ws.send_json(json!({ "type": "subscribe", "topics": ["*"] })).await;
                    let _ = tokio::time::timeout(stay, async { while ws.stream.next().await.is_some() {} }).await;
                    if turn.is_multiple_of(2) {
                        let _ = ws.stream.close(None).await;
                    }
                    true
                }
                Err(_) => false,
            }
        } else {
            match d.request(Method::GET, "/api/v1/events").send().await {
                Ok(mut response) if response.status() == StatusCode::OK => {
                    let _ =
                        tokio::time::timeout(stay, async { while let Ok(Some(_)) = response.chunk().await {} }).await;
                    true
                }
                _ => false,
            }
        };
        sessions += u64::from(got_in);
        let _ = d.client.get(d.url("/health")).send().await;
        tokio::time::sleep(rest).await;
    }
    sessions
}

#[actix_web::test]
async fn five_hundred_clients_coming_and_going_for_a_minute_leak_nothing() {
    let seconds: u64 = std::env::var("WARDEN_CHURN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    const ROUNDS: u32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), "[server]\nmax_clients = 600\n").unwrap();
    let d = ServeProcess::start(&home).await;
    // Events keep flowing all along.
    let ticker = d.exec_with(json!({ "prompt": "while true; do echo tick; sleep 0.1; done", "cwd": dir.path() })).await;
    let connected = || async { d.get_ok("/api/v1/status").await["counts"]["clients"]["connected"].as_u64().unwrap() };

    // The minute in rounds; after each, once every client is gone, the daemon's RSS.
    let mut sessions = 0;
    let mut busiest = 0;
    let mut rss = Vec::new();
    for _ in 0..ROUNDS {
        let end = std::time::Instant::now() + Duration::from_secs(seconds) / ROUNDS;
        let clients: Vec<_> = (0..500).map(|c| churn(&d, c, end)).collect();
        let watching = async {
            let mut most = 0;
            while std::time::Instant::now() < end {
                most = most.max(connected().await);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            most
        };
        let (done, most) = futures_util::join!(futures_util::future::join_all(clients), watching);
        sessions += done.iter().sum::<u64>();
        busiest = busiest.max(most);
        wait_until("every client to be gone", Duration::from_secs(60), || async {
            (connected().await == 0).then_some(())
        })
        .await;
        rss.push(d.rss_mib());
    }
    let shown: Vec<String> = rss.iter().map(|r| format!("{r:.1}")).collect();
    assert!(busiest > 100, "the churn kept few clients connected ({busiest}): it tested little");
    assert!(sessions > 5_000, "only {sessions} client sessions in {seconds} s");
    // The first round sizes the daemon's pools and caches. The allocator keeps what later
    // rounds freed until the daemon hands it back (every 10 s): then the RSS is where the
    // first round left it, which it would not be if the sessions leaked.
    let baseline = rss[0];
    let settled = wait_until("the RSS to return to its first-round size", Duration::from_secs(40), || {
        let now = d.rss_mib();
        std::future::ready((now <= baseline * 1.05).then_some(now))
    })
    .await;
    eprintln!(
        "{sessions} client sessions in {seconds} s, up to {busiest} at once; RSS after each round (MiB): {}; \
         settled at {settled:.1}",
        shown.join(", ")
    );
    expect_json(d.post(&format!("/api/v1/executions/{}/cancel", ticker["id"]), &json!({})).await, StatusCode::OK).await;
    assert!(d.stop().await.success());
}
