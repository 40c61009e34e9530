# An agent turned hostile: run as an execution's prompt by tests/api/trust.rs, it tries
# everything the trust boundary must refuse, with the credentials and files an agent can
# reach, and prints one JSON line per step: what it tried and what it got. The test then
# checks each refusal and replays the HTTP steps with the owner token.
#
#   python3 agent_attack.py DATA_DIR GATE_APPROVAL_ID VICTIM_EXECUTION_ID DAEMON_PID

import base64
import http.client
import json
import os
import sqlite3
import sys
import time
import urllib.parse

data_dir, gate, victim, daemon = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
url = urllib.parse.urlparse(os.environ["WARDEN_URL"])
token = os.environ["WARDEN_TOKEN"]
me = int(os.environ["WARDEN_EXECUTION_ID"])


def call(method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    sent = {"Authorization": f"Bearer {token}", "X-Warden-Client": "cli"}
    sent.update(headers or {})
    payload = None
    if body is not None:
        payload = json.dumps(body)
        sent["Content-Type"] = "application/json"
    connection.request(method, path, body=payload, headers=sent)
    response = connection.getresponse()
    text = response.read(65536) if response.status != 101 else b""
    connection.close()
    try:
        return response.status, json.loads(text or b"null")
    except ValueError:
        return response.status, None


def step(name, method, path, body=None, headers=None):
    status, answer = call(method, path, body, headers)
    print(json.dumps({"step": name, "method": method, "path": path, "body": body, "headers": headers or {},
                      "status": status, "code": (answer or {}).get("code") if isinstance(answer, dict) else None}),
          flush=True)
    return status, answer


def file_step(name, action):
    try:
        action()
        print(json.dumps({"step": name, "file": True, "ok": True}), flush=True)
    except Exception as e:  # any refusal counts, whatever its errno
        print(json.dumps({"step": name, "file": True, "ok": False, "error": str(e)}), flush=True)


# Its own approval may be asked for: that is what agent tokens are for.
status, own = step("ask for own approval", "POST", "/api/v1/approvals", {"title": "rm -rf build"})
own_id = own["id"] if status == 201 else 0
step("approve own approval", "POST", f"/api/v1/approvals/{own_id}", {"decision": "approve"})
step("approve another execution's gate", "POST", f"/api/v1/approvals/{gate}", {"decision": "approve"})
step("ask about another execution", "POST", "/api/v1/approvals", {"title": "x", "execution_id": victim})
step("cancel another execution", "POST", f"/api/v1/executions/{victim}/cancel")
step("read another execution", "GET", f"/api/v1/executions/{victim}")
step("read another execution's output", "GET", f"/api/v1/executions/{victim}/output")
step("list executions", "GET", "/api/v1/executions")
step("run an execution in /", "POST", "/api/v1/executions", {"prompt": "true", "cwd": "/"})
step("register / as a workspace", "POST", "/api/v1/workspaces", {"name": "root", "path": "/"})
step("create an ungated unsandboxed profile", "POST", "/api/v1/profiles",
     {"name": "escape", "provider": "local", "command": ["sh", "-c", "{prompt}"], "sandbox": "off"})
step("read every profile's env", "GET", "/api/v1/profiles")
step("lift the provider's limits", "PUT", "/api/v1/providers/local", {"max_concurrent": 0, "rate_per_minute": 0})
step("list approvals", "GET", "/api/v1/approvals")
step("list sessions", "GET", "/api/v1/sessions")
step("read metrics", "GET", "/metrics")
step("follow the event stream", "GET", "/api/v1/events")
key = base64.b64encode(os.urandom(16)).decode()
step("hold a WebSocket slot", "GET", "/api/v1/ws",
     headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": key})
step("read its own execution", "GET", f"/api/v1/executions/{me}")

file_step("read the token file", lambda: open(os.path.join(data_dir, "token")).read())
file_step("open the database", lambda: sqlite3.connect(f"file:{os.path.join(data_dir, 'warden.db')}?mode=ro",
                                                       uri=True).execute("SELECT count(*) FROM executions").fetchone())
file_step("write into the data dir", lambda: open(os.path.join(data_dir, "config.toml"), "a").write("\n"))


def inherited_files():
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    print(json.dumps({"step": "inherited files", "files": links}), flush=True)


inherited_files()
file_step("read the daemon's memory", lambda: open(f"/proc/{daemon}/mem", "rb").read(1))
try:
    environment = open(f"/proc/{daemon}/environ", "rb").read().decode(errors="replace")
except OSError as e:
    environment = str(e)
print(json.dumps({"step": "the daemon's environment", "text": environment}), flush=True)

# The test replays the steps with the owner's token while this execution still runs (its
# approval is cancelled when it ends), then lets it end.
print(json.dumps({"step": "waiting"}), flush=True)
for _ in range(1200):
    if os.path.exists("release"):
        break
    time.sleep(0.05)
