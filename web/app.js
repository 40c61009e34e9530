// warden's web dashboard: a pure client of the public API (REST + one WebSocket).
// The token comes from the URL fragment (#token=…), is kept in sessionStorage and is
// sent only in headers (REST) or as a WebSocket subprotocol, never in a URL.

const OUTPUT_SHOWN = 2000; // lines in the page at most; earlier ones load on request
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  lastSeq: null,      // the last event applied: a reconnect resumes after it
  executions: new Map(),
  approvals: new Map(),
  providers: [],
  sessions: new Map(),
  selected: null,     // execution id shown in the detail
  output: [],         // lines of the selected execution, in order
  firstShown: 0,      // the smallest n in `output`
  session: null,      // session id whose transcript is open
  attempt: 0,
  agent: null,        // the selected execution's transcript so far: {seq, usage, calls}
  tab: "transcript",  // which of the selected agent execution's views is shown
};

// ---- token --------------------------------------------------------------------------

function takeToken() {
  const match = location.hash.match(/token=([0-9a-fA-F]+)/);
  if (match) {
    sessionStorage.setItem("warden.token", match[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("warden.token");
}

// ---- REST -----------------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${state.token}`, "content-type": "application/json", "x-warden-client": "web" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const json = text && (response.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
  if (!response.ok) {
    const error = new Error(json.detail || response.statusText);
    Object.assign(error, { status: response.status, problem: json });
    throw error;
  }
  return json;
}

async function snapshot() {
  const [status, executions, approvals, providers, sessions, profiles, workspaces] = await Promise.all([
    api("GET", "/status"),
    api("GET", "/executions?limit=200"),
    api("GET", "/approvals?status=pending&limit=500"),
    api("GET", "/providers?limit=500"),
    api("GET", "/sessions?limit=100"),
    api("GET", "/profiles?limit=500"),
    api("GET", "/workspaces?limit=500"),
  ]);
  $("daemon").textContent = `${status.url} · v${status.version} · up since ${new Date(status.started_at).toLocaleString()}`;
  state.executions = new Map(executions.items.map((e) => [e.id, e]));
  state.approvals = new Map(approvals.items.map((a) => [a.id, a]));
  state.providers = providers.items;
  state.sessions = new Map(sessions.items.map((s) => [s.id, s]));
  fillSelect($("new-profile"), profiles.items.map((p) => p.name), "shell");
  fillSelect($("new-workspace"), ["", ...workspaces.items.map((w) => w.name)], "");
  renderAll();
}

function fillSelect(select, values, preferred) {
  const current = select.value || preferred;
  select.replaceChildren(...values.map((v) => new Option(v === "" ? "(none)" : v, v)));
  select.value = values.includes(current) ? current : values[0] ?? "";
}

// ---- live events ----------------------------------------------------------------------

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws`;
  const socket = new WebSocket(url, ["warden.v1", `warden.token.${state.token}`]);
  let helloSeen = false;
  socket.onmessage = async (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "hello" && !helloSeen) {
      helloSeen = true;
      if (state.lastSeq === null) {
        // Events after this seq are replayed, so the snapshot is never newer than them.
        state.lastSeq = frame.last_seq;
        try { await snapshot(); } catch (e) { socket.close(); return; }
      }
      socket.send(JSON.stringify({ type: "subscribe", topics: ["*"], since: state.lastSeq }));
      state.attempt = 0;
      setLink("live");
    } else if (frame.type === "event") {
      apply(frame.event);
    } else if (frame.type === "skipped") {
      // Output lines were skipped for this slow page: read the missing ones.
      if (state.selected !== null) loadOutputAfter(state.output.at(-1)?.n ?? 0);
    }
  };
  socket.onclose = () => {
    state.attempt += 1;
    const pause = Math.min(250 * 2 ** (state.attempt - 1), 5000);
    setLink("reconnecting", `Disconnected from warden; reconnecting in ${(pause / 1000).toFixed(1)} s (attempt ${state.attempt})…`);
    setTimeout(connect, pause);
  };
}

function setLink(kind, banner) {
  const link = $("link");
  link.className = `link ${kind}`;
  link.textContent = kind === "live" ? "live" : "disconnected — reconnecting";
  $("banner").hidden = !banner;
  $("banner").textContent = banner || "";
}

function apply(event) {
  if (state.lastSeq !== null && event.seq <= state.lastSeq) return; // never twice
  state.lastSeq = event.seq;
  const kind = event.type;
  if (kind === "execution.output") {
    if (event.execution_id === state.selected) appendOutput([{ ...event.data, ts: event.ts }]);
    return;
  }
  if (kind.startsWith("agent.")) {
    if (event.execution_id === state.selected) addEntry(event);
    if (kind === "agent.usage") refreshProvidersSoon();
    return;
  }
  if (kind.startsWith("provider.")) {
    refreshProvidersSoon();
    return;
  }
  if (kind === "execution.changes") {
    const execution = state.executions.get(event.execution_id);
    if (execution) {
      execution.changes = event.data.changes;
      renderExecutions();
      if (state.selected === execution.id) renderDetail(true);
    }
    return;
  }
  if (kind === "execution.prepared" || kind === "execution.merged" || kind === "execution.applied") {
    // Not an execution: what happened to an isolated execution's worktree and branch.
    const execution = state.executions.get(event.execution_id);
    if (execution && kind !== "execution.applied") {
      const { worktree = null, branch = null, base = execution.base, base_branch = execution.base_branch } =
        kind === "execution.prepared" ? event.data : {};
      Object.assign(execution, { worktree, branch, base, base_branch });
      if (state.selected === execution.id) renderDetail(false);
    }
    return;
  }
  if (kind === "execution.deleted") {
    state.executions.delete(event.execution_id);
    if (state.selected === event.execution_id) {
      state.selected = null;
      $("detail").hidden = true;
      $("focus-empty").hidden = false;
    }
    renderExecutions();
    return;
  }
  if (kind.startsWith("execution.")) {
    state.executions.set(event.data.id, event.data);
    renderExecutions();
    if (state.selected === event.data.id) renderDetail(false);
    refreshProvidersSoon();
  } else if (kind.startsWith("approval.")) {
    const approval = event.data;
    if (approval.status === "pending") {
      if (!state.approvals.has(approval.id)) notifyApproval(approval);
      state.approvals.set(approval.id, approval);
    } else {
      state.approvals.delete(approval.id);
    }
    renderApprovals();
  } else if (kind.startsWith("session.")) {
    if (kind === "session.message") {
      if (event.data.session_id === state.session) appendTranscript(event.data);
    } else {
      state.sessions.set(event.data.id, event.data);
      renderSessions();
    }
  }
}

// Provider counts are read again shortly after execution events; an event that arrives
// while a read is pending or in flight causes one more read, so the last one is current.
let providerTimer = null;
let providersDirty = false;
function refreshProvidersSoon() {
  providersDirty = true;
  if (providerTimer) return;
  providerTimer = setTimeout(async () => {
    providersDirty = false;
    try { state.providers = (await api("GET", "/providers?limit=500")).items; renderProviders(); } catch {}
    providerTimer = null;
    if (providersDirty) refreshProvidersSoon();
  }, 200);
}

function notifyApproval(approval) {
  if ("Notification" in window && Notification.permission === "granted") {
    new Notification("warden: approval needed", { body: approval.title });
  }
}

// ---- rendering ------------------------------------------------------------------------

function renderAll() {
  renderProviders();
  renderApprovals();
  renderExecutions();
  renderSessions();
  if (state.selected !== null) renderDetail(true);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function money(usd) {
  return `$${(usd ?? 0).toFixed(usd >= 100 ? 0 : usd >= 1 ? 2 : 4)}`;
}

function count(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${Math.round(n / 1e3)}k` : String(n ?? 0);
}

function renderProviders() {
  $("provider-list").replaceChildren(...state.providers.map((p) => {
    const limit = p.max_concurrent || 0;
    const bar = el("meter", { min: "0", max: String(limit || Math.max(1, p.running)), value: String(p.running),
      "aria-label": `${p.name}: ${p.running} of ${limit || "unlimited"} running` });
    const spent = p.spend_today ?? {};
    const budget = [p.max_cost_usd_per_day !== undefined ? `of ${money(p.max_cost_usd_per_day)}` : "",
      p.max_tokens_per_day !== undefined ? `of ${count(p.max_tokens_per_day)} tokens` : ""].filter(Boolean).join(", ");
    return el("li", { "data-provider": p.name },
      el("strong", {}, p.name), " ", bar, ` ${p.running}/${limit || "∞"} running, ${p.queued} queued`,
      spent.cost_usd || spent.input_tokens || spent.output_tokens || budget
        ? el("span", { class: "spend", title: "spent this UTC day, as its agents reported" },
          ` · ${money(spent.cost_usd)}, ${count((spent.input_tokens ?? 0) + (spent.output_tokens ?? 0))} tokens today${budget ? ` ${budget}` : ""}`)
        : null,
      p.budget_reached ? el("span", { class: "badge bad" }, " budget reached") : null);
  }));
}

// Control and bidirectional-formatting characters an agent wrote are shown as escapes,
// so a title cannot reorder or hide part of itself.
function visible(text) {
  return String(text).replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/g,
    (c) => c === "\u001b" ? "\\e" : `\\u{${c.codePointAt(0).toString(16)}}`);
}

// An approval's details field by field (nested objects as dotted names), as the CLI and
// warden dash show them.
function detailFields(value, prefix = "", out = []) {
  if (value === null || value === undefined) return out;
  if (typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) detailFields(inner, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out.push([prefix, typeof value === "string" ? value : JSON.stringify(value)]);
  }
  return out;
}

// Every detail, whole; a long one starts folded with its length said, one click away.
function renderDetails(a) {
  return el("dl", { class: "details" }, ...detailFields(a.details).flatMap(([name, value]) => {
    const text = visible(value);
    const long = text.length > 160 || text.includes("\n");
    const shown = long
      ? el("details", {}, el("summary", {}, `${text.slice(0, 120).replace(/\n/g, " ")}… (${text.length} characters — show all)`),
          el("pre", {}, text))
      : el("code", {}, text);
    return [el("dt", {}, visible(name)), el("dd", {}, shown)];
  }));
}

// An execution that runs unconfined says so (the sandbox is off, or the kernel has none).
function unconfined(e) {
  return e.sandbox === "off" ? "unsandboxed" : e.sandbox === "unavailable" ? "unsandboxed (no Landlock)" : "";
}

function renderApprovals() {
  const pending = [...state.approvals.values()];
  $("approvals").hidden = pending.length === 0;
  $("approval-list").replaceChildren(...pending.map((a) => {
    // The answer's outcome goes to the notice line: the approval leaves this list.
    const decide = (decision) => async () => {
      try {
        await api("POST", `/approvals/${a.id}`, { decision });
        notice(`Approval “${a.title}”: ${decision === "approve" ? "approved" : "denied"} — your answer won`);
      } catch (e) {
        const by = e.problem?.approval?.decided_by;
        notice(by ? `Approval “${a.title}” was already decided by ${by}; your answer did not count` : e.message);
      }
    };
    const asker = a.kind === "gate" ? `warden, before execution ${a.execution_id} starts`
      : a.kind === "agent" ? `the agent of execution ${a.execution_id}` : "the owner";
    return el("li", { "data-approval": a.id },
      el("strong", {}, visible(a.title)), " ",
      el("span", { class: "muted" }, `asked by ${asker} (${visible(a.source)}), until ${new Date(a.expires_at).toLocaleTimeString()}`),
      renderDetails(a),
      el("div", { class: "row" },
        el("button", { type: "button", onclick: decide("approve"), "aria-label": `Approve: ${a.title}` }, "Approve"),
        el("button", { type: "button", onclick: decide("deny"), "aria-label": `Deny: ${a.title}` }, "Deny")));
  }));
}

function notice(text) {
  $("notice").textContent = text;
}

function elapsed(e) {
  if (!e.started_at) return "";
  const end = e.finished_at ? new Date(e.finished_at) : new Date();
  const s = Math.max(0, (end - new Date(e.started_at)) / 1000);
  return s < 60 ? `${s.toFixed(1)}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s` : `${Math.floor(s / 3600)}h`;
}

function totals(changes) {
  const t = changes?.totals;
  return t ? `+${t.additions} −${t.deletions} in ${t.files} file${t.files === 1 ? "" : "s"}` : "";
}

function renderExecutions() {
  const statuses = $("filter-status").value ? $("filter-status").value.split(",") : null;
  const text = $("filter-text").value.trim().toLowerCase();
  const rows = [...state.executions.values()]
    .sort((a, b) => b.id - a.id)
    .filter((e) => !statuses || statuses.includes(e.status))
    .filter((e) => !text || `${e.prompt} ${e.profile} ${e.workspace ?? ""}`.toLowerCase().includes(text))
    .map((e) => {
      const open = () => select(e.id);
      return el("tr", {
        tabindex: "0", "data-execution": e.id, class: e.id === state.selected ? "selected" : "",
        onclick: open, onkeydown: (k) => { if (k.key === "Enter" || k.key === " ") { k.preventDefault(); open(); } },
      },
        el("td", {}, String(e.id)),
        el("td", { class: `status ${e.status}` }, e.status.replace("_", " "), e.waiting_for ? ` (${e.waiting_for})` : ""),
        el("td", {}, e.profile, unconfined(e) ? el("span", { class: "unsandboxed", title: unconfined(e) }, " ⚠") : ""),
        el("td", {}, e.workspace ?? "–"),
        el("td", { class: "prompt", title: e.prompt }, e.prompt),
        el("td", {}, elapsed(e)),
        el("td", {}, e.exit_code ?? ""),
        el("td", {}, totals(e.changes)));
    });
  const focused = document.activeElement?.dataset?.execution;
  $("execution-rows").replaceChildren(...rows);
  if (focused) $("execution-rows").querySelector(`[data-execution="${focused}"]`)?.focus();
}

function renderSessions() {
  const sessions = [...state.sessions.values()].sort((a, b) => b.id - a.id);
  $("session-list").replaceChildren(...sessions.map((s) =>
    el("li", {}, el("button", { type: "button", onclick: () => openSession(s.id) },
      `#${s.id} ${s.title || "(untitled)"} — ${s.status}`))));
}

// ---- execution detail -----------------------------------------------------------------

async function select(id) {
  state.selected = id;
  state.output = [];
  state.agent = { seq: 0, usage: { input_tokens: 0, output_tokens: 0, cache_read_tokens: 0, cache_write_tokens: 0, cost_usd: null }, turns: null, tools: 0 };
  $("output").replaceChildren();
  $("agent-transcript").replaceChildren();
  $("output-note").textContent = "";
  $("output-earlier").hidden = true;
  $("detail-result").textContent = "";
  $("diff").hidden = true;
  $("detail").hidden = false;
  $("focus-empty").hidden = true;
  $("transcript-box").hidden = true;
  state.session = null;
  const agentRun = Boolean(state.executions.get(id)?.agent);
  showTab(agentRun ? "transcript" : "output", agentRun);
  renderExecutions();
  renderDetail(true);
  try {
    const [page] = await Promise.all([
      api("GET", `/executions/${id}/output?tail=${OUTPUT_SHOWN}`),
      agentRun ? loadTranscript(id) : null,
    ]);
    if (state.selected !== id) return;
    prependOutput(page.items);
    if (page.pruned_at) $("output-note").textContent = `Output and events removed by retention (${page.pruned_at}).`;
  } catch (e) { $("detail-result").textContent = e.message; }
}

// ---- agent transcript -----------------------------------------------------------------

function showTab(tab, agentRun) {
  state.tab = tab;
  $("detail-tabs").hidden = !agentRun;
  for (const [name, pane] of [["transcript", "transcript-pane"], ["output", "output-pane"]]) {
    $(`tab-${name}`).setAttribute("aria-selected", String(name === tab));
    $(pane).hidden = name !== tab;
  }
}

async function loadTranscript(id) {
  let cursor = null;
  do {
    const page = await api("GET", `/executions/${id}/transcript?limit=500${cursor ? `&cursor=${cursor}` : ""}`);
    if (state.selected !== id) return;
    page.items.forEach(addEntry);
    cursor = page.next_cursor;
  } while (cursor);
}

// A tool call's input as one line: its telling field (a command, a file), else JSON.
function headline(input) {
  if (input && typeof input === "object" && !Array.isArray(input)) {
    const keys = Object.keys(input);
    const key = keys.length === 1 ? keys[0] : ["command", "file_path", "path", "pattern", "query", "url", "prompt"].find((k) => k in input);
    if (key !== undefined) input = input[key];
  }
  return typeof input === "string" ? input : JSON.stringify(input);
}

// One agent event into the transcript (each once, in seq order).
function addEntry(event) {
  if (event.seq <= state.agent.seq) return;
  state.agent.seq = event.seq;
  const d = event.data;
  const list = $("agent-transcript");
  const follow = list.parentElement.scrollTop + list.parentElement.clientHeight >= list.parentElement.scrollHeight - 4;
  switch (event.type) {
    case "agent.started":
      list.append(el("li", { class: "marker" }, `${visible(d.model ?? "agent")} · conversation ${visible(d.agent_session_id ?? "–")}`));
      break;
    case "agent.message":
      list.append(el("li", { class: "message" }, el("p", {}, visible(d.text))));
      break;
    case "agent.tool_call":
      state.agent.tools += 1;
      list.append(el("li", { class: "tool", "data-call": d.call_id },
        el("details", {},
          el("summary", {}, el("span", { class: "tool-name" }, visible(d.tool)), " ", el("code", {}, visible(headline(d.input)).slice(0, 300)),
            " ", el("span", { class: "tool-state pending" }, "…")),
          el("h4", {}, "Input"), el("pre", { class: "tool-input" }, visible(JSON.stringify(d.input, null, 2))))));
      break;
    case "agent.tool_result": {
      const call = [...list.querySelectorAll("li.tool")].find((li) => li.dataset.call === d.call_id);
      const result = [el("h4", {}, d.ok ? "Result" : "Result (failed)"), el("pre", { class: "tool-result" }, visible(d.summary || "(nothing)"))];
      if (call) {
        call.querySelector("details").append(...result);
        const mark = call.querySelector(".tool-state");
        mark.className = `tool-state ${d.ok ? "ok" : "bad"}`;
        mark.textContent = d.ok ? "✓" : "✗ failed";
      } else {
        list.append(el("li", { class: "tool" }, el("details", {}, el("summary", {}, `result of ${visible(d.call_id)}`), ...result)));
      }
      break;
    }
    case "agent.usage":
      for (const key of ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"]) state.agent.usage[key] += d[key] ?? 0;
      if (d.cost_usd !== undefined) state.agent.usage.cost_usd = (state.agent.usage.cost_usd ?? 0) + d.cost_usd;
      break;
    case "agent.result": {
      const facts = [d.turns !== undefined ? `${d.turns} turn(s)` : "", d.duration_ms !== undefined ? `${(d.duration_ms / 1000).toFixed(1)} s` : "",
        d.cost_usd !== undefined ? money(d.cost_usd) : ""].filter(Boolean).join(", ");
      state.agent.turns = d.turns ?? null;
      list.append(el("li", { class: `marker ${d.is_error ? "bad" : "ok"}` }, `${d.is_error ? "✗ the agent failed" : "✓ done"}${facts ? `: ${facts}` : ""}`,
        d.is_error && d.text ? el("p", {}, visible(d.text)) : null));
      break;
    }
    default:
      return;
  }
  renderUsage();
  if (follow) list.parentElement.scrollTop = list.parentElement.scrollHeight;
}

// Running tokens and cost: the transcript's sums while it runs, the agent's own once it
// has ended.
function renderUsage() {
  const e = state.executions.get(state.selected);
  const line = $("agent-usage");
  line.hidden = !e?.agent;
  if (!e?.agent) return;
  const a = e.agent.result ? e.agent : null;
  const u = state.agent.usage;
  const tokens = a ? a.tokens : { input: u.input_tokens, output: u.output_tokens, cache_read: u.cache_read_tokens, cache_write: u.cache_write_tokens };
  const cost = a ? a.cost_usd : u.cost_usd;
  const parts = [
    `${count(tokens.input)} in (${count(tokens.cache_read)} cached, ${count(tokens.cache_write)} written)`,
    `${count(tokens.output)} out`,
    cost !== null && cost !== undefined ? money(cost) : "cost not reported",
    `${a ? a.tool_calls : state.agent.tools} tool call(s)`,
  ];
  if (a) parts.push(`${a.turns} turn(s)`);
  if (e.agent.model) parts.unshift(visible(e.agent.model));
  line.textContent = parts.join(" · ");
}

function renderDetail(withChanges) {
  const e = state.executions.get(state.selected);
  if (!e) return;
  $("detail-title").textContent = `Execution ${e.id}`;
  $("detail-info").replaceChildren(
    el("span", { class: `status ${e.status}` }, e.status.replace("_", " ")),
    ` · ${e.profile} · ${visible(e.cwd)} · ${elapsed(e)}${e.exit_code !== null && e.exit_code !== undefined ? ` · exit ${e.exit_code}` : ""}`,
    unconfined(e) ? el("span", { class: "unsandboxed" }, ` · ${unconfined(e)}`) : "",
    e.error ? ` · ${visible(e.error)}` : "");
  const final = !["pending_approval", "queued", "running", "paused"].includes(e.status);
  for (const button of $("detail-actions").querySelectorAll("[data-action]")) {
    const action = button.dataset.action;
    button.disabled = action === "retry" ? !final : action === "pause" ? e.status !== "running"
      : action === "resume" ? e.status !== "paused" : final;
  }
  renderWork(e, final);
  if (state.agent) renderUsage();
  if (withChanges) loadChanges(e);
}

// An isolated execution's worktree and branch, and what can be done with its work.
function renderWork(e, final) {
  $("work").hidden = !e.branch;
  if (!e.branch) return;
  $("work-info").textContent = `${visible(e.branch)}${e.worktree ? ` · ${visible(e.worktree)}` : " · worktree removed"}`;
  if (state.workShown !== e.id) {
    state.workShown = e.id;
    $("merge-into").value = e.base_branch || "";
    $("work-files").replaceChildren();
  }
  for (const button of $("work-actions").querySelectorAll("[data-work]")) button.disabled = !final;
}

async function workAction(action) {
  const id = state.selected;
  const body = action === "merge" && $("merge-into").value.trim() ? { into: $("merge-into").value.trim() } : {};
  if (action === "discard" && !confirm(`Discard the work of execution ${id}? Its worktree and branch are removed.`)) return;
  try {
    const result = await api("POST", `/executions/${id}/${action}`, body);
    const files = action === "discard" ? [] : result.files;
    $("detail-result").textContent = action === "apply" ? `Applied to your work tree (uncommitted): ${files.length} file(s)`
      : action === "merge" ? `Merged into ${result.into} as ${result.commit.slice(0, 12)}: ${files.length} file(s)`
      : "Discarded: its worktree and branch are removed";
    $("work-files").replaceChildren(...files.map((f) => el("li", {}, visible(f))));
    if (action !== "apply") {
      const e = state.executions.get(id);
      if (e) Object.assign(e, { branch: null, worktree: null });
      renderDetail(false);
    }
  } catch (err) {
    $("detail-result").textContent = err.message;
    $("work-files").replaceChildren(...(err.problem?.files ?? []).map((f) => el("li", { class: "conflict" }, visible(f))));
  }
}

async function loadChanges(e) {
  if (!e.changes) { $("changes").hidden = true; return; }
  $("changes").hidden = false;
  $("changes-totals").textContent = totals(e.changes) || (e.changes.error ? `(${e.changes.error})` : "(running)");
  try {
    const report = await api("GET", `/executions/${e.id}/changes`);
    if (state.selected !== e.id) return;
    const files = report.changes?.files ?? [];
    $("changes-list").replaceChildren(...files.map((f) => el("li", {},
      el("button", { type: "button", onclick: () => showDiff(e.id, f.path) },
        `${f.status} ${f.old_path ? `${f.old_path} → ` : ""}${f.path} ${f.binary ? "(binary)" : `+${f.additions} −${f.deletions}`}`))));
    if (!files.length) $("changes-list").replaceChildren(el("li", { class: "muted" }, report.reason || "no files changed"));
  } catch (err) { $("changes-list").replaceChildren(el("li", { class: "muted" }, err.message)); }
}

async function showDiff(id, path) {
  const text = await api("GET", `/executions/${id}/diff?path=${encodeURIComponent(path)}`);
  const lines = String(text).split("\n").map((line) => {
    const cls = line.startsWith("@@") ? "hunk" : line.startsWith("+") && !line.startsWith("+++") ? "add"
      : line.startsWith("-") && !line.startsWith("---") ? "del" : "";
    return el("span", { class: cls }, `${line}\n`);
  });
  $("diff").replaceChildren(...lines);
  $("diff").hidden = false;
}

// An output line with its ANSI colours (SGR) rendered; every other escape is shown, not
// obeyed.
function lineNode(line) {
  const node = el("span", { class: line.stream, "data-n": line.n });
  const text = line.text;
  if (!text.includes("\u001b[")) {
    node.textContent = `${visible(text)}\n`;
    return node;
  }
  const sgr = /\u001b\[([0-9;]*)m/g;
  let at = 0, colour = null, bold = false, match;
  const push = (part) => {
    if (!part) return;
    const classes = [colour !== null ? `ansi-${colour}` : "", bold ? "ansi-bold" : ""].filter(Boolean).join(" ");
    node.append(classes ? el("span", { class: classes }, visible(part)) : visible(part));
  };
  while ((match = sgr.exec(text)) !== null) {
    push(text.slice(at, match.index));
    at = sgr.lastIndex;
    for (const code of (match[1] || "0").split(";").map(Number)) {
      if (code === 0) { colour = null; bold = false; }
      else if (code === 1) bold = true;
      else if (code === 22) bold = false;
      else if (code === 39) colour = null;
      else if (code >= 30 && code <= 37) colour = code - 30;
      else if (code >= 90 && code <= 97) colour = code - 90 + 8;
    }
  }
  push(text.slice(at));
  node.append("\n");
  return node;
}

// Live lines arrive after the tail; each line number is shown once.
function appendOutput(lines) {
  const last = state.output.at(-1)?.n ?? 0;
  const fresh = lines.filter((l) => l.n > last);
  if (!fresh.length) return;
  const pre = $("output");
  const following = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  state.output.push(...fresh);
  pre.append(...fresh.map(lineNode));
  // Keep the page light: at most OUTPUT_SHOWN lines in it.
  while (state.output.length > OUTPUT_SHOWN) { state.output.shift(); pre.firstChild.remove(); }
  state.firstShown = state.output[0]?.n ?? 0;
  $("output-earlier").hidden = state.firstShown <= 1;
  $("output-note").textContent = `lines ${state.firstShown}–${state.output.at(-1).n}`;
  if (following) pre.scrollTop = pre.scrollHeight;
}

function prependOutput(lines) {
  const shown = new Set(state.output.map((l) => l.n));
  const older = lines.filter((l) => !shown.has(l.n));
  const merged = [...older, ...state.output].sort((a, b) => a.n - b.n);
  state.output = [];
  $("output").replaceChildren();
  appendOutput(merged.slice(-OUTPUT_SHOWN));
}

async function loadOutputAfter(after) {
  const id = state.selected;
  const page = await api("GET", `/executions/${id}/output?after=${after}&limit=${OUTPUT_SHOWN}`);
  if (state.selected === id) appendOutput(page.items);
}

// ---- sessions -------------------------------------------------------------------------

async function openSession(id) {
  state.session = id;
  state.selected = null;
  $("detail").hidden = true;
  $("focus-empty").hidden = true;
  renderExecutions();
  const session = state.sessions.get(id);
  $("transcript-title").textContent = `Session ${id}: ${session?.title || "(untitled)"}`;
  $("transcript").replaceChildren();
  $("transcript-box").hidden = false;
  const page = await api("GET", `/sessions/${id}/messages?limit=500`);
  page.items.forEach(appendTranscript);
}

function appendTranscript(message) {
  if ($("transcript").querySelector(`[data-message="${message.id}"]`)) return;
  $("transcript").append(el("li", { class: message.role, "data-message": message.id },
    el("strong", {}, `${message.role}: `), message.content));
}

// ---- wiring ---------------------------------------------------------------------------

function wire() {
  $("filter-status").addEventListener("change", renderExecutions);
  $("filter-text").addEventListener("input", renderExecutions);
  $("detail-close").addEventListener("click", () => {
    state.selected = null;
    $("detail").hidden = true;
    $("focus-empty").hidden = false;
    renderExecutions();
  });
  $("tab-transcript").addEventListener("click", () => showTab("transcript", true));
  $("tab-output").addEventListener("click", () => showTab("output", true));
  $("output-earlier").addEventListener("click", async () => {
    const id = state.selected;
    const after = Math.max(0, state.firstShown - 1 - OUTPUT_SHOWN);
    const page = await api("GET", `/executions/${id}/output?after=${after}&limit=${state.firstShown - 1 - after}`);
    if (state.selected !== id) return;
    // Earlier lines replace the newest ones in view, so the page stays bounded.
    const pre = $("output");
    state.output = page.items;
    pre.replaceChildren(...page.items.map(lineNode));
    state.firstShown = page.items[0]?.n ?? 1;
    $("output-earlier").hidden = state.firstShown <= 1;
    $("output-note").textContent = `lines ${state.firstShown}–${page.items.at(-1)?.n ?? 0} (earlier; reopen to follow)`;
  });
  for (const button of $("work-actions").querySelectorAll("[data-work]")) {
    button.addEventListener("click", () => workAction(button.dataset.work));
  }
  for (const button of $("detail-actions").querySelectorAll("[data-action]")) {
    button.addEventListener("click", async () => {
      try {
        const result = await api("POST", `/executions/${state.selected}/${button.dataset.action}`, {});
        $("detail-result").textContent = button.dataset.action === "retry" ? `Retry queued as execution ${result.id}` : `${button.dataset.action}: done`;
      } catch (e) { $("detail-result").textContent = e.message; }
    });
  }
  $("new-execution").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { prompt: $("new-prompt").value, profile: $("new-profile").value };
    if ($("new-cwd").value.trim()) body.cwd = $("new-cwd").value.trim();
    else if ($("new-workspace").value) body.workspace = $("new-workspace").value;
    try {
      const execution = await api("POST", "/executions", body);
      $("new-result").textContent = `Execution ${execution.id} queued`;
      state.executions.set(execution.id, { ...execution, ...state.executions.get(execution.id) });
      renderExecutions();
    } catch (e) { $("new-result").textContent = e.message; }
  });
  $("send-message").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", `/sessions/${state.session}/messages`, { content: $("message-input").value });
      $("message-input").value = "";
    } catch (e) { alert(e.message); }
  });
  if ("Notification" in window && Notification.permission === "default") {
    $("notify").hidden = false;
    $("notify").addEventListener("click", async () => { await Notification.requestPermission(); $("notify").hidden = true; });
  }
  setInterval(() => { renderExecutions(); }, 1000);
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("warden.token", $("token-input").value.trim());
    start();
  });
}

function start() {
  state.token = takeToken();
  if (!state.token) { $("login").hidden = false; return; }
  $("login").hidden = true;
  $("app").hidden = false;
  connect();
}

wire();
start();
