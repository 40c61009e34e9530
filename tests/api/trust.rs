//! The trust boundary, attacked the way an agent would: with its own token, the files
//! it can reach and processes it leaves behind. Each refusal is shown to be real by the
//! same step succeeding with the owner's token.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// Profiles for these tests: one gated, one per sandbox mode.
async fn profiles(d: &TestDaemon) {
    for (name, extra) in [
        ("gated", json!({"approval": "always"})),
        ("unsandboxed", json!({"sandbox": "off"})),
        ("confined", json!({"sandbox": "workspace-write"})),
    ] {
        let mut profile = json!({"name": name, "provider": "local", "command": ["sh", "-c", "{prompt}"]});
        profile.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    }
}

/// The JSON lines an execution printed.
async fn json_lines(d: &TestDaemon, id: &Value) -> Vec<Value> {
    d.output(id).await.iter().filter_map(|line| serde_json::from_str(line["text"].as_str()?).ok()).collect()
}

fn attack_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/agent_attack.py").display().to_string()
}

/// Sends a step the agent tried, with the owner's token.
async fn replay(d: &TestDaemon, step: &Value) -> StatusCode {
    let method = Method::from_bytes(step["method"].as_str().unwrap().as_bytes()).unwrap();
    let mut request = d.request(method, step["path"].as_str().unwrap());
    for (name, value) in step["headers"].as_object().unwrap() {
        request = request.header(name, value.as_str().unwrap());
    }
    if !step["body"].is_null() {
        request = request.json(&step["body"]);
    }
    request.send().await.expect("the owner's request is answered").status()
}

#[actix_web::test]
async fn an_agent_token_can_do_nothing_but_ask_about_its_own_execution() {
    let d = spawn_for_executions().await;
    profiles(&d).await;
    let work = tempfile::tempdir().unwrap();
    let gated = d.exec_with(json!({"prompt": "true", "profile": "gated", "cwd": work.path()})).await;
    let gate = wait_until("the gate", Duration::from_secs(10), || async {
        let shown = d.execution(&gated["id"]).await;
        (!shown["approval_id"].is_null()).then(|| shown["approval_id"].clone())
    })
    .await;
    let victim = d.exec_with(json!({"prompt": "sleep 60", "cwd": work.path()})).await;
    d.wait_status(&victim["id"], "running").await;

    let data_dir = d.home.dir().display().to_string();
    let prompt = format!("python3 {} {data_dir} {gate} {} {}", attack_script(), victim["id"], std::process::id());
    let agent = d.exec_with(json!({"prompt": prompt, "cwd": work.path()})).await;
    let steps = wait_until("the agent's attempts", Duration::from_secs(30), || async {
        let steps = json_lines(&d, &agent["id"]).await;
        if d.execution(&agent["id"]).await["status"] != "running" {
            panic!("the agent ended early: {}", d.output_text(&agent["id"]).await);
        }
        steps.iter().any(|s| s["step"] == "waiting").then_some(steps)
    })
    .await;
    assert_eq!(d.execution(&agent["id"]).await["sandbox"], "protect-data");
    let step = |name: &str| {
        steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no step {name:?} in {steps:?}")).clone()
    };

    // What an agent token is for works.
    assert_eq!(step("ask for own approval")["status"], 201);
    assert_eq!(step("read its own execution")["status"], 200);
    // Everything else is refused, and says why.
    let refused = [
        "approve own approval",
        "approve another execution's gate",
        "ask about another execution",
        "cancel another execution",
        "read another execution",
        "read another execution's output",
        "list executions",
        "run an execution in /",
        "register / as a workspace",
        "create an ungated unsandboxed profile",
        "read every profile's env",
        "lift the provider's limits",
        "list approvals",
        "list sessions",
        "read metrics",
        "follow the event stream",
        "hold a WebSocket slot",
    ];
    for name in refused {
        let step = step(name);
        assert_eq!(step["status"], 403, "{step}");
        assert_eq!(step["code"], "forbidden_scope", "{step}");
    }
    // Nothing of the data dir is in reach.
    for name in ["read the token file", "open the database", "write into the data dir", "read the daemon's memory"] {
        let step = step(name);
        assert_eq!(step["ok"], false, "{step}");
    }
    // What the agent can read of other processes of the user holds no token.
    let environment = step("the daemon's environment");
    assert!(!environment["text"].as_str().unwrap().contains(&d.token), "the daemon's environment holds the token");
    let files = step("inherited files");
    for file in files["files"].as_array().unwrap() {
        assert!(!file.as_str().unwrap().starts_with(&data_dir), "an agent inherited {file}");
    }
    // The agent's approval is its own, and the owner sees who asked.
    let own: Value = d.get_ok("/api/v1/approvals?status=pending").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["title"] == "rm -rf build")
        .cloned()
        .expect("the agent's approval is pending");
    assert_eq!((own["kind"].clone(), own["execution_id"].clone()), (json!("agent"), agent["id"].clone()));
    assert_eq!(d.execution(&gated["id"]).await["status"], "pending_approval");
    assert_eq!(d.execution(&victim["id"]).await["status"], "running");

    // Each refusal is real: the same request with the owner's token goes through.
    for name in refused {
        let step = step(name);
        let step = if name == "approve own approval" {
            json!({"method": "POST", "path": format!("/api/v1/approvals/{}", own["id"]), "headers": {},
                   "body": step["body"]})
        } else {
            step
        };
        let status = replay(&d, &step).await;
        let expected = if name == "hold a WebSocket slot" { StatusCode::SWITCHING_PROTOCOLS } else { status };
        assert!(status.is_success() || status == expected, "{name}: the owner got {status}");
    }
    let approved = d.get_ok(&format!("/api/v1/approvals/{gate}")).await;
    assert_eq!(approved["decided_by"], "owner", "{approved}");
    std::fs::write(work.path().join("release"), "").unwrap();
    assert_eq!(d.wait_final(&agent["id"]).await["status"], "succeeded");
    d.wait_final(&gated["id"]).await;
    d.wait_final(&victim["id"]).await;
}

#[actix_web::test]
async fn a_gate_is_released_only_by_its_own_approval() {
    let d = spawn_for_executions().await;
    profiles(&d).await;
    let gated = d.exec_with(json!({"prompt": "echo ran", "profile": "gated", "cwd": std::env::temp_dir()})).await;
    let gate = wait_until("the gate", Duration::from_secs(10), || async {
        let shown = d.execution(&gated["id"]).await;
        (!shown["approval_id"].is_null()).then(|| shown["approval_id"].clone())
    })
    .await;
    // A harmless-looking approval that names the gated execution, approved.
    let decoy = expect_json(
        d.post("/api/v1/approvals", &json!({"title": "read the README", "execution_id": gated["id"]})).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(decoy["kind"], "owner");
    let decided = expect_json(
        d.post(&format!("/api/v1/approvals/{}", decoy["id"]), &json!({"decision": "approve"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(decided["status"], "approved");
    // The gate still holds: its own approval is pending and the execution waits.
    d.get_ok("/health").await;
    assert_eq!(d.execution(&gated["id"]).await["status"], "pending_approval");
    let own = d.get_ok(&format!("/api/v1/approvals/{gate}")).await;
    assert_eq!((own["status"].clone(), own["kind"].clone()), (json!("pending"), json!("gate")));
    // Its own approval releases it.
    expect_json(d.post(&format!("/api/v1/approvals/{gate}"), &json!({"decision": "approve"})).await, StatusCode::OK)
        .await;
    let finished = d.wait_final(&gated["id"]).await;
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(d.output_text(&gated["id"]).await, "ran");
}

#[actix_web::test]
async fn decisions_say_the_owner_answered_whatever_the_client_claims() {
    let d = spawn_daemon().await;
    let asked = expect_json(d.post("/api/v1/approvals", &json!({"title": "deploy"})).await, StatusCode::CREATED).await;
    let response = d
        .request(Method::POST, &format!("/api/v1/approvals/{}", asked["id"]))
        .header("X-Warden-Client", "agent-42 (trust me) [8m")
        .json(&json!({"decision": "deny"}))
        .send()
        .await
        .unwrap();
    let decided = expect_json(response, StatusCode::OK).await;
    assert_eq!(decided["decided_by"], "owner via agent-42trustme8m");
}

/// Asks for an approval with the token in `WARDEN_TOKEN` once `go` exists (at once when
/// it is empty) and writes the HTTP status to `result`.
const ASK_LATER: &str = r#"
import json, os, sys, time, urllib.error, urllib.request
go, result = sys.argv[1], sys.argv[2]
url, token = os.environ.pop("WARDEN_URL"), os.environ.pop("WARDEN_TOKEN")
os.environ.pop("WARDEN_EXECUTION_ID", None)
open(result + ".ready", "w").close()
# Waits a minute at most: a detached process must not outlive a failed test for long.
for _ in range(1200):
    if not go or os.path.exists(go):
        break
    time.sleep(0.05)
request = urllib.request.Request(url + "/api/v1/approvals", data=json.dumps({"title": "late"}).encode(),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    status = urllib.request.urlopen(request).status
except urllib.error.HTTPError as e:
    status = e.code
with open(result + ".tmp", "w") as f:
    f.write(str(status))
os.rename(result + ".tmp", result)
"#;

#[actix_web::test]
async fn a_process_left_behind_loses_the_agent_token_when_its_execution_ends() {
    let d = spawn_for_executions().await;
    let work = tempfile::tempdir().unwrap();
    let script = work.path().join("ask_later.py");
    std::fs::write(&script, ASK_LATER).unwrap();
    let (go, result) = (work.path().join("go"), work.path().join("result"));
    // The agent leaves a detached process (a session of its own, the execution id gone
    // from its env) that keeps the token and waits for a signal to use it. The agent
    // ends once it has detached (a process still in the group when its leader ends is
    // killed with it).
    let prompt = format!(
        "setsid python3 {script} {go} {result} < /dev/null > /dev/null 2>&1 & \
         for i in $(seq 1000); do [ -e {result}.ready ] && break; sleep 0.02; done",
        script = script.display(),
        go = go.display(),
        result = result.display(),
    );
    let agent = d.exec_with(json!({"prompt": prompt, "cwd": work.path()})).await;
    assert_eq!(d.wait_final(&agent["id"]).await["status"], "succeeded");
    std::fs::write(&go, "").unwrap();
    let status = wait_until("the leftover's request", Duration::from_secs(20), || async {
        std::fs::read_to_string(&result).ok()
    })
    .await;
    assert_eq!(status, "401", "a process left behind still acted for its ended execution");
    // The same request while the execution runs goes through.
    let now = work.path().join("now");
    let prompt = format!("python3 {} '' {}", script.display(), now.display());
    let inside = d.exec_with(json!({"prompt": prompt, "cwd": work.path()})).await;
    assert_eq!(d.wait_final(&inside["id"]).await["status"], "succeeded", "{}", d.output_text(&inside["id"]).await);
    assert_eq!(std::fs::read_to_string(&now).unwrap(), "201");
}

#[actix_web::test]
async fn an_agent_token_is_rate_limited_and_the_owner_is_not() {
    let d = spawn_for_executions().await;
    let work = tempfile::tempdir().unwrap();
    // The agent asks for its own execution 300 times as fast as it can.
    let script = "python3 -c \"
import os, http.client, urllib.parse, collections
u = urllib.parse.urlparse(os.environ['WARDEN_URL'])
c = http.client.HTTPConnection(u.hostname, u.port)
seen = collections.Counter(); retry = None
for _ in range(300):
    c.request('GET', '/api/v1/executions/' + os.environ['WARDEN_EXECUTION_ID'], headers={'Authorization': 'Bearer ' + os.environ['WARDEN_TOKEN']})
    r = c.getresponse(); r.read(); seen[r.status] += 1
    if r.status == 429: retry = r.getheader('Retry-After')
print(seen[200], seen[429], retry)
\"";
    let agent = d.exec_with(json!({"prompt": script, "cwd": work.path()})).await;
    assert_eq!(d.wait_final(&agent["id"]).await["status"], "succeeded", "{}", d.output_text(&agent["id"]).await);
    let text = d.output_text(&agent["id"]).await;
    let counts: Vec<&str> = text.split_whitespace().collect();
    let (ok, limited): (u64, u64) = (counts[0].parse().unwrap(), counts[1].parse().unwrap());
    assert_eq!(ok + limited, 300, "{text}");
    assert!(limited > 0 && ok >= 60, "the agent got {ok} answers and {limited} refusals");
    assert!(counts[2].parse::<u64>().is_ok_and(|s| s >= 1), "Retry-After: {text}");
    // The owner is never limited.
    for _ in 0..300 {
        assert_eq!(d.get("/api/v1/status").await.status(), StatusCode::OK);
    }
}

/// A new directory that is in none of the places `workspace-write` lets agents write:
/// under `$HOME` (not in its agents' state dirs), else beside the sources, else in
/// `/var/cache` (a clone for CI may well live under `/tmp`).
fn dir_outside_the_temp_dirs() -> tempfile::TempDir {
    let scratch = ["/tmp", "/var/tmp", "/dev"];
    let candidates =
        [std::env::var("HOME").unwrap_or_default(), env!("CARGO_MANIFEST_DIR").to_owned(), "/var/cache".into()];
    candidates
        .iter()
        .filter(|dir| !dir.is_empty())
        .filter_map(|dir| std::fs::canonicalize(dir).ok())
        .filter(|dir| !scratch.iter().any(|s| dir.starts_with(s)))
        .find_map(|dir| tempfile::Builder::new().prefix(".warden-test-").tempdir_in(dir).ok())
        .expect("a writable directory outside /tmp, /var/tmp and /dev for this test")
}

#[actix_web::test]
async fn sandboxes_keep_agents_out_of_the_data_dir_and_workspace_write_keeps_writes_in() {
    let d = spawn_for_executions().await;
    profiles(&d).await;
    // Outside the work tree and the temp dirs (which workspace-write may write to).
    let (work, elsewhere) = (tempfile::tempdir().unwrap(), dir_outside_the_temp_dirs());
    let token = d.home.token_path();
    let db = d.home.db_path();
    let outside = elsewhere.path().join("escaped");
    let inside = work.path().join("made-here");
    let prompt = format!(
        "cat {token} >/dev/null 2>&1 && echo token-read || echo token-refused; \
         head -c 16 {db} >/dev/null 2>&1 && echo db-read || echo db-refused; \
         {{ echo x > {outside}; }} 2>/dev/null && echo outside-written || echo outside-refused; \
         {{ echo x > {inside}; }} 2>/dev/null && echo inside-written || echo inside-refused",
        token = token.display(),
        db = db.display(),
        outside = outside.display(),
        inside = inside.display(),
    );
    let mut seen = Vec::new();
    for profile in ["shell", "confined", "unsandboxed"] {
        let _ = std::fs::remove_file(&outside);
        let run = d.exec_with(json!({"prompt": prompt, "profile": profile, "cwd": work.path()})).await;
        let finished = d.wait_final(&run["id"]).await;
        seen.push((finished["sandbox"].as_str().unwrap().to_owned(), d.output_text(&run["id"]).await));
    }
    let expected = [
        ("protect-data", "token-refused\ndb-refused\noutside-written\ninside-written"),
        ("workspace-write", "token-refused\ndb-refused\noutside-refused\ninside-written"),
        ("off", "token-read\ndb-read\noutside-written\ninside-written"),
    ];
    for ((sandbox, text), (want_sandbox, want_text)) in seen.iter().zip(expected) {
        assert_eq!((sandbox.as_str(), text.as_str()), (want_sandbox, want_text));
    }
}

#[actix_web::test]
async fn agents_never_run_inside_the_data_dir() {
    let d = spawn_daemon().await;
    let inside = d.home.git_dir();
    std::fs::create_dir_all(&inside).unwrap();
    let response = d.post("/api/v1/executions", &json!({"prompt": "true", "cwd": inside})).await;
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request").await;
}

#[actix_web::test]
async fn profile_env_values_are_never_served() {
    let d = spawn_daemon().await;
    let profile = json!({"name": "keyed", "provider": "local", "command": ["true"], "env": {"API_KEY": "sk-secret"}});
    let created = expect_json(d.post("/api/v1/profiles", &profile).await, StatusCode::CREATED).await;
    let listed = d.get_ok("/api/v1/profiles").await;
    let one = d.get_ok("/api/v1/profiles/keyed").await;
    for shown in [&created, &listed, &one] {
        assert!(!shown.to_string().contains("sk-secret"), "{shown}");
    }
    assert_eq!(one["env"], json!(["API_KEY"]));
    // The agent still gets the value.
    let run = d.exec_with(json!({"prompt": "x", "profile": "keyed", "cwd": std::env::temp_dir()})).await;
    d.wait_final(&run["id"]).await;
}

#[actix_web::test]
async fn claude_hook_inside_an_execution_asks_with_the_agent_token() {
    let d = spawn_for_executions().await;
    let work = tempfile::tempdir().unwrap();
    let input = r#"{"tool_name":"Bash","tool_input":{"command":"npm test"},"session_id":"s1"}"#;
    let prompt = format!("echo '{input}' | {} hook claude --tools Bash --timeout 30", warden_bin().display());
    let run = d.exec_with(json!({"prompt": prompt, "cwd": work.path()})).await;
    let asked = wait_until("the hook's approval", Duration::from_secs(20), || async {
        let page = d.get_ok("/api/v1/approvals?status=pending").await;
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!((asked["kind"].clone(), asked["execution_id"].clone()), (json!("agent"), run["id"].clone()));
    assert_eq!(asked["title"], "Bash: npm test");
    let response = d
        .request(Method::POST, &format!("/api/v1/approvals/{}", asked["id"]))
        .header("X-Warden-Client", "cli")
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::OK).await;
    assert_eq!(d.wait_final(&run["id"]).await["status"], "succeeded");
    let answer: Value = serde_json::from_str(&d.output_text(&run["id"]).await).unwrap();
    assert_eq!(answer["hookSpecificOutput"]["permissionDecision"], "allow", "{answer}");
    assert!(answer["hookSpecificOutput"]["permissionDecisionReason"].as_str().unwrap().contains("owner via cli"));
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}

#[actix_web::test]
async fn hung_up_long_polls_and_event_streams_are_released_at_once() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let d = ServeProcess::start(&dir.path().join("home")).await;
    let asked =
        expect_json(d.post("/api/v1/approvals", &json!({"title": "wait for me"})).await, StatusCode::CREATED).await;
    let idle = open_fds(d.pid);
    let address = d.base_url.trim_start_matches("http://").to_owned();
    let request = format!(
        "GET /api/v1/approvals/{}?wait=300 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
        asked["id"], d.token
    );

    // 2,000 long polls whose clients hang up before any answer.
    for _ in 0..20 {
        let mut sockets = Vec::new();
        for _ in 0..100 {
            let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
            socket.write_all(request.as_bytes()).await.unwrap();
            sockets.push(socket);
        }
        drop(sockets);
        assert_eq!(d.get("/health").await.status(), StatusCode::OK);
    }
    wait_until("the daemon to let go of the hung-up long polls", Duration::from_secs(10), || async {
        (open_fds(d.pid) <= idle + 5).then_some(())
    })
    .await;
    assert_eq!(d.get("/health").await.status(), StatusCode::OK);

    // An event stream whose client leaves frees its slot long before a keep-alive.
    let stream = d.get("/api/v1/events").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let connected = |status: Value| status["counts"]["clients"]["connected"].as_u64().unwrap();
    assert_eq!(connected(d.get_ok("/api/v1/status").await), 1);
    drop(stream);
    wait_until("the stream's slot to be free", Duration::from_secs(3), || async {
        (connected(d.get_ok("/api/v1/status").await) == 0).then_some(())
    })
    .await;
    // The approval's watchers went with their clients: deciding it answers at once.
    let decided = expect_json(
        d.post(&format!("/api/v1/approvals/{}", asked["id"]), &json!({"decision": "deny"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(decided["status"], "denied");
}

#[actix_web::test]
async fn an_agent_token_holds_a_bounded_number_of_long_polls() {
    let d = spawn_for_executions().await;
    let work = tempfile::tempdir().unwrap();
    // Nine long polls on its own approval at once: the ninth is refused.
    let script = "python3 -c \"
import os, json, threading, http.client, urllib.parse
u = urllib.parse.urlparse(os.environ['WARDEN_URL']); auth = {'Authorization': 'Bearer ' + os.environ['WARDEN_TOKEN'], 'Content-Type': 'application/json'}
c = http.client.HTTPConnection(u.hostname, u.port); c.request('POST', '/api/v1/approvals', json.dumps({'title': 'poll me'}), auth)
a = json.loads(c.getresponse().read())
statuses = []
def poll():
    c = http.client.HTTPConnection(u.hostname, u.port); c.request('GET', '/api/v1/approvals/%d?wait=3' % a['id'], headers=auth)
    statuses.append(c.getresponse().status)
threads = [threading.Thread(target=poll) for _ in range(9)]
[t.start() for t in threads]; [t.join() for t in threads]
print(sorted(statuses))
\"";
    let agent = d.exec_with(json!({"prompt": script, "cwd": work.path()})).await;
    assert_eq!(d.wait_final(&agent["id"]).await["status"], "succeeded", "{}", d.output_text(&agent["id"]).await);
    assert_eq!(d.output_text(&agent["id"]).await, "[200, 200, 200, 200, 200, 200, 200, 200, 429]");
}

#[actix_web::test]
async fn a_data_dir_others_can_write_is_refused_and_left_as_it_was() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("shared");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = ServeProcess::run_to_end(&home).await;
    assert_eq!(refused.status.code(), Some(1));
    // Its stderr goes to a log beside the home.
    let said = std::fs::read_to_string(home.with_extension("log")).unwrap();
    assert!(said.contains("may be written by others"), "{said}");
    assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o777, 0o777);
    assert!(std::fs::read_dir(&home).unwrap().next().is_none(), "nothing was written there");
}
