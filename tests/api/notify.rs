//! Notifications to real local HTTP receivers: a webhook's body carries the event and
//! its HMAC-SHA256 signature checks out, filters choose the events, a receiver that
//! fails gets the notification again with backoff, and one that hangs holds nothing
//! else up. `warden notify test` reports each target.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use warden::config::{NotifyFormat, NotifyTarget};

use crate::helpers::*;

/// What a receiver got: its path, headers and body.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    signature: Option<String>,
    title: Option<String>,
    body: Vec<u8>,
}

/// A local HTTP receiver: `/ok` answers 200, `/flaky` 500 twice and then 200, `/hang`
/// never answers in time, `/gone` 404.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let kept = got.clone();
        let server = HttpServer::new(move || {
            let kept = kept.clone();
            App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
                let kept = kept.clone();
                async move {
                    let header =
                        |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let received = Received {
                        path: request.path().to_owned(),
                        signature: header("x-warden-signature"),
                        title: header("title"),
                        body: body.to_vec(),
                    };
                    let tries = {
                        let mut got = kept.lock().unwrap();
                        got.push(received);
                        got.iter().filter(|r| r.path == request.path()).count()
                    };
                    match request.path() {
                        "/hang" => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            HttpResponse::Ok().finish()
                        }
                        "/flaky" if tries <= 2 => HttpResponse::InternalServerError().finish(),
                        "/gone" => HttpResponse::NotFound().finish(),
                        _ => HttpResponse::Ok().finish(),
                    }
                }
            }))
        })
        .workers(2)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        actix_web::rt::spawn(server.run());
        Receiver { url, got }
    }

    fn got(&self, path: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        wait_until(&format!("{n} notification(s) at {path}"), within, || async {
            let got = self.got(path);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

fn target(url: String, events: &[&str], secret: Option<&str>) -> NotifyTarget {
    NotifyTarget {
        url: Some(url),
        desktop: false,
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        secret: secret.map(str::to_owned),
        format: NotifyFormat::Json,
    }
}

#[actix_web::test]
async fn webhooks_are_signed_filtered_retried_and_never_held_up_by_a_hung_receiver() {
    let receiver = Receiver::start().await;
    let targets = vec![
        target(format!("{}/hang", receiver.url), &["approval.requested"], None),
        target(
            format!("{}/ok", receiver.url),
            &["approval.requested", "execution.finished status=failed"],
            Some("s3cret"),
        ),
        target(format!("{}/flaky", receiver.url), &["approval.requested"], None),
        NotifyTarget { format: NotifyFormat::Ntfy, ..target(format!("{}/phone", receiver.url), &["approval.*"], None) },
    ];
    let d = spawn_with(move |c| {
        c.kill_grace = Duration::from_millis(300);
        c.notify = targets;
    })
    .await;

    let asked =
        expect_json(d.post("/api/v1/approvals", &json!({"title": "deploy to prod?"})).await, StatusCode::CREATED).await;
    let got = receiver.wait_for("/ok", 1, Duration::from_secs(10)).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event"]["type"], "approval.requested");
    assert_eq!(body["event"]["data"]["id"], asked["id"]);
    assert_eq!(body["text"], "Approval needed: deploy to prod?");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
    mac.update(&got[0].body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(got[0].signature.as_deref(), Some(expected.as_str()), "the signature checks out");
    // ntfy: the text is the body, with ntfy's headers.
    let phone = receiver.wait_for("/phone", 1, Duration::from_secs(10)).await;
    assert_eq!(String::from_utf8_lossy(&phone[0].body), "Approval needed: deploy to prod?");
    assert_eq!(phone[0].title.as_deref(), Some("warden"));

    // The hung receiver holds only its own queue: while it hangs, a failed execution is
    // told at once, a succeeded one (filtered out) is not, and the API answers.
    // (Each target delivers on its own task: the hung one's request may come a moment later.)
    receiver.wait_for("/hang", 1, Duration::from_secs(10)).await;
    assert_eq!(receiver.got("/hang").len(), 1, "the hung receiver got its one request");
    let told = Instant::now();
    let ok = d.exec("true").await;
    d.wait_final(&ok["id"]).await;
    let failed = d.exec("exit 3").await;
    d.wait_final(&failed["id"]).await;
    let got = receiver.wait_for("/ok", 2, Duration::from_secs(5)).await;
    assert!(told.elapsed() < Duration::from_secs(5));
    let body: Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(
        (body["event"]["type"].as_str(), body["event"]["data"]["id"].as_i64()),
        (Some("execution.finished"), failed["id"].as_i64())
    );
    assert!(body["text"].as_str().unwrap().contains("failed"), "{body}");

    // The flaky receiver got it on the third try, after backoff (1 s, then 2 s).
    let flaky = receiver.wait_for("/flaky", 3, Duration::from_secs(20)).await;
    assert_eq!(flaky[0].body, flaky[2].body, "the same notification, again");
    assert_eq!(receiver.got("/ok").len(), 2, "the succeeded execution was filtered out");
    assert_eq!(receiver.got("/hang").len(), 1, "one request in flight at a time");
}

#[actix_web::test]
async fn warden_notify_test_reports_each_target_and_fails_when_one_does() {
    let receiver = Receiver::start().await;
    let targets = vec![
        target(format!("{}/ok", receiver.url), &["approval.requested"], Some("s3cret")),
        target(format!("{}/gone?token=hidden", receiver.url), &["approval.requested"], None),
    ];
    let d = spawn_with(move |c| c.notify = targets).await;
    let out = warden(d.home.dir(), &["notify", "test"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let host = receiver.url.trim_start_matches("http://");
    assert!(text.contains(&format!("ok   http://{host}: delivered")), "{text}");
    assert!(text.contains(&format!("FAIL http://{host}: the receiver answered 404 Not Found")), "{text}");
    assert!(!text.contains("hidden"), "a URL's secrets are not shown: {text}");
    let got = receiver.wait_for("/ok", 1, Duration::from_secs(5)).await;
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event"]["type"], "notify.test");
    assert!(got[0].signature.is_some());
}

#[actix_web::test]
async fn bad_notify_entries_stop_the_daemon_from_starting_with_a_clear_error() {
    for (entry, says) in [
        ("[[notify]]\nurl = \"ftp://x\"\n", "must be http or https"),
        ("[[notify]]\nevents = [\"approval.requested\"]\n", "give either url or desktop = true"),
        ("[[notify]]\nurl = \"http://127.0.0.1:1/\"\nevents = [\"execution.finished status\"]\n", "is not field=value"),
        ("[[notify]]\nurl = \"http://127.0.0.1:1/\"\nsecret = 3\n", "invalid type"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let home = warden::home::Home::new(dir.path().join("home"));
        home.ensure().unwrap();
        std::fs::write(home.config_path(), entry).unwrap();
        let error = warden::config::Config::load(home, &Default::default()).unwrap_err();
        assert!(error.contains(says), "{entry}: {error}");
    }
}

#[actix_web::test]
async fn a_desktop_session_gets_a_desktop_notification() {
    // notify-send, as a desktop has it, stood in by a script that keeps its arguments.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let told = dir.path().join("told");
    std::fs::write(bin.join("notify-send"), format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> {}\n", told.display()))
        .unwrap();
    std::fs::set_permissions(bin.join("notify-send"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let home = dir.path().join("warden");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.toml"), "[[notify]]\ndesktop = true\nevents = [\"approval.requested\"]\n")
        .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let daemon = ServeProcess::start_with_env(&home, &[("PATH", &path), ("DISPLAY", ":99")]).await;
    expect_json(daemon.post("/api/v1/approvals", &json!({"title": "rm -rf build?"})).await, StatusCode::CREATED).await;
    let lines = wait_until("the desktop notification", Duration::from_secs(10), || async {
        std::fs::read_to_string(&told).ok().filter(|t| t.contains("Approval needed"))
    })
    .await;
    assert_eq!(lines, "--app-name=warden\nwarden\nApproval needed: rm -rf build?\n");
}
