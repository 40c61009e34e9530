//! `warden dash`: the terminal dashboard, a pure client of the public API. The feed
//! (`feed.rs`) keeps a WebSocket open and forwards events; keys come from a reader
//! thread; actions (cancel, approve, …) run as tasks that report back. The loop here
//! only applies messages to the `Model` and redraws at most ~30 times a second, so it
//! never waits on the network. ratatui restores the terminal on exit and on panic.

mod feed;
pub mod model;
mod view;

use std::io::Write;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc::{self, UnboundedSender};

use crate::client::{Client, ClientError};
use crate::domain::Page;
use crate::domain::Word;
use crate::domain::{AppliedWork, Approval, Envelope, ExecutionStatus, MergedWork, OutputLine};
use feed::Feed;
use model::{Focus, Link, Model, OutputPane, OUTPUT_KEPT};

/// The shortest time between two redraws.
const FRAME: Duration = Duration::from_millis(33);

/// Feed messages applied in one go before the loop looks at keys and the clock again.
const FEED_BATCH: usize = 512;

/// What a finished action reports to the loop.
enum Done {
    Notice(String),
    Output { execution_id: i64, lines: Vec<OutputLine> },
    Transcript { execution_id: i64, entries: Vec<Envelope> },
    Providers(Vec<crate::domain::Provider>),
}

/// Runs the dashboard until `q`.
pub async fn run(client: Client, token: String) -> anyhow::Result<()> {
    let (feed_tx, mut feed_rx) = mpsc::channel(feed::FEED_BACKLOG);
    let feed = tokio::spawn(feed::run(client.clone(), token, feed_tx));
    let (keys_tx, mut keys_rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || read_keys(keys_tx));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();

    let mut terminal = ratatui::try_init()?;
    let mut model = Model::new(client.base_url().to_owned());
    let mut frames = tokio::time::interval(FRAME);
    frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_second = Instant::now();
    let mut dirty = true;
    let result = loop {
        tokio::select! {
            Some(key) = keys_rx.recv() => {
                if !on_key(key, &mut model, &client, &done_tx) {
                    break Ok(());
                }
                dirty = true;
            }
            Some(message) = feed_rx.recv() => {
                on_feed(message, &mut model, &client, &done_tx);
                // Whatever else has arrived is applied before the next redraw.
                for _ in 0..FEED_BATCH {
                    match feed_rx.try_recv() {
                        Ok(message) => on_feed(message, &mut model, &client, &done_tx),
                        Err(_) => break,
                    }
                }
                dirty = true;
            }
            Some(done) = done_rx.recv() => {
                on_done(done, &mut model);
                dirty = true;
            }
            _ = frames.tick() => {
                // Elapsed times, countdowns and the flash change with the clock.
                if last_second.elapsed() >= Duration::from_secs(1) {
                    last_second = Instant::now();
                    dirty = true;
                    if model.providers_stale {
                        model.providers_stale = false;
                        refresh_providers(&client, &done_tx);
                    }
                    if model.notice.as_ref().is_some_and(|(_, at)| at.elapsed() > Duration::from_secs(6)) {
                        model.notice = None;
                    }
                }
                if dirty {
                    if let Err(e) = terminal.draw(|frame| view::draw(frame, &model)) {
                        break Err(e.into());
                    }
                    dirty = false;
                }
            }
        }
    };
    feed.abort();
    ratatui::restore();
    result
}

/// Blocking key reads on their own thread; ends when the loop is gone.
fn read_keys(keys: UnboundedSender<KeyEvent>) {
    loop {
        match event::read() {
            Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => {
                if keys.send(key).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Handles a key; false means quit.
fn on_key(key: KeyEvent, model: &mut Model, client: &Client, done: &UnboundedSender<Done>) -> bool {
    if let Some(input) = model.filter_input.as_mut() {
        match key.code {
            KeyCode::Enter => {
                let text = model.filter_input.take().unwrap_or_default();
                if let Err(e) = model.apply_filter_text(&text) {
                    model.notify(e);
                }
            }
            KeyCode::Esc => model.filter_input = None,
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char(c) => input.push(c),
            _ => {}
        }
        return true;
    }
    if model.help {
        model.help = false;
        return !matches!(key.code, KeyCode::Char('q'));
    }
    if let Some(id) = model.approval_open {
        // The approval shown whole: decide it or close it; nothing else acts under it.
        match key.code {
            KeyCode::Char('a') | KeyCode::Char('d') => {
                model.approval_open = None;
                decide(client, id, key.code == KeyCode::Char('a'), done);
            }
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => model.approval_open = None,
            _ => {}
        }
        return true;
    }
    if let Some(id) = model.confirm_discard.take() {
        match key.code {
            KeyCode::Char('y') => work(client, id, "discard", done),
            _ => model.notify(format!("the work of {id} is kept")),
        }
        return true;
    }
    let selected = model.selected().map(|e| (e.id.0, e.status));
    // The selected execution, if it has work on a branch of its own.
    let isolated = model.selected().filter(|e| e.branch.is_some()).map(|e| e.id.0);
    match key.code {
        KeyCode::Char('q') => return false,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return false,
        KeyCode::Char('?') => model.help = true,
        KeyCode::Down | KeyCode::Char('j') => model.move_selection(1),
        KeyCode::Up | KeyCode::Char('k') => model.move_selection(-1),
        KeyCode::Tab => {
            model.focus = match model.focus {
                Focus::Executions if !model.pending_approvals().is_empty() => Focus::Approvals,
                _ => Focus::Executions,
            }
        }
        KeyCode::Char('f') => model.cycle_filter(),
        KeyCode::Char('/') => model.filter_input = Some(String::new()),
        KeyCode::Enter if model.focus == Focus::Approvals => model.approval_open = model.selected_approval,
        KeyCode::Enter => {
            if let Some((id, _)) = selected {
                model.output = Some(OutputPane { execution_id: id, ..Default::default() });
                load_output(client, id, done);
                if model.executions.get(&id).is_some_and(|e| e.agent.is_some()) {
                    load_transcript(client, id, done);
                }
            }
        }
        KeyCode::Char('t') => match model.output.as_mut() {
            Some(pane) if model.executions.get(&pane.execution_id).is_some_and(|e| e.agent.is_some()) => {
                pane.raw = !pane.raw;
            }
            Some(_) => model.notify("this execution's profile writes plain text: its output is all there is"),
            None => model.notify("Enter opens the selected execution first"),
        },
        KeyCode::Esc => model.output = None,
        KeyCode::PageUp => scroll(model, 10),
        KeyCode::PageDown => scroll(model, -10),
        KeyCode::End => scroll(model, i64::MIN),
        KeyCode::Char('a') | KeyCode::Char('d') => {
            let approval = if model.focus == Focus::Approvals || model.pending_approvals().len() == 1 {
                model.selected_approval
            } else {
                None
            };
            match approval {
                Some(id) => decide(client, id, key.code == KeyCode::Char('a'), done),
                None if model.pending_approvals().is_empty() => model.notify("no approval is waiting"),
                None => model.notify("several approvals wait: Tab to their table and pick one"),
            }
        }
        KeyCode::Char(key @ ('A' | 'M' | 'D')) => match (isolated, key) {
            (None, _) => model.notify("the selected execution has no worktree (not isolated, or merged or discarded)"),
            (Some(id), 'A') => work(client, id, "apply", done),
            (Some(id), 'M') => work(client, id, "merge", done),
            (Some(id), _) => {
                model.confirm_discard = Some(id);
                model.notify(format!("discard the work of {id} (its worktree and branch)? y: yes, any other key: no"));
            }
        },
        KeyCode::Char('c') => act(client, selected, "cancel", done),
        KeyCode::Char('r') => act(client, selected, "retry", done),
        KeyCode::Char('p') => {
            let action = if selected.is_some_and(|(_, s)| s == ExecutionStatus::Paused) { "resume" } else { "pause" };
            act(client, selected, action, done)
        }
        _ => {}
    }
    true
}

fn scroll(model: &mut Model, by: i64) {
    if let Some(pane) = model.output.as_mut() {
        pane.scroll_back = if by == i64::MIN {
            0
        } else {
            let held = pane.lines.len().max(pane.transcript.len());
            (pane.scroll_back as i64 + by).clamp(0, held.saturating_sub(1) as i64) as usize
        };
    }
}

fn on_feed(message: Feed, model: &mut Model, client: &Client, done: &UnboundedSender<Done>) {
    match message {
        Feed::Live => model.link = Link::Live,
        Feed::Down { attempt, error } => model.link = Link::Reconnecting { attempt, error },
        Feed::Snapshot(snapshot) => {
            model.started_at = snapshot.started_at;
            model.load(snapshot.executions, snapshot.approvals, snapshot.providers);
        }
        Feed::Event(event) => {
            if event.kind == "daemon.started" {
                model.started_at = event.ts.into();
            }
            if model.apply(&event) {
                // The terminal bell: a new approval waits.
                let _ = std::io::stdout().write_all(b"\x07").and_then(|_| std::io::stdout().flush());
            }
        }
        Feed::Skipped => {
            // Output lines were skipped for this slow client: read them from the store.
            if let Some(pane) = model.output.as_mut() {
                pane.gaps += 1;
                load_output(client, pane.execution_id, done);
            }
        }
    }
}

fn on_done(done: Done, model: &mut Model) {
    match done {
        Done::Notice(text) => model.notify(text),
        Done::Output { execution_id, lines } => {
            if let Some(pane) = model.output.as_mut().filter(|p| p.execution_id == execution_id) {
                // History first, then live lines: `push` keeps each number once, in order.
                let mut live: Vec<OutputLine> = pane.lines.drain(..).collect();
                pane.last_n = 0;
                let mut all = lines;
                all.append(&mut live);
                all.sort_by_key(|l| l.n);
                for line in all {
                    pane.push(line);
                }
            }
        }
        Done::Transcript { execution_id, entries } => {
            if let Some(pane) = model.output.as_mut().filter(|p| p.execution_id == execution_id) {
                // The history, then what came live meanwhile (each seq once).
                let live = std::mem::take(&mut pane.transcript);
                let live_seq = std::mem::replace(&mut pane.transcript_seq, 0);
                for entry in &entries {
                    pane.push_entry(entry);
                }
                if live_seq > pane.transcript_seq {
                    pane.transcript = live;
                    pane.transcript_seq = live_seq;
                }
            }
        }
        Done::Providers(providers) => model.providers = providers,
    }
}

/// An agent execution's transcript (its first 500 entries, then what comes live).
fn load_transcript(client: &Client, execution_id: i64, done: &UnboundedSender<Done>) {
    let (client, done) = (client.clone(), done.clone());
    tokio::spawn(async move {
        let path = format!("/api/v1/executions/{execution_id}/transcript?limit=500");
        let report = match client.get::<Page<Envelope>>(&path).await {
            Ok(page) => Done::Transcript { execution_id, entries: page.items },
            Err(e) => Done::Notice(format!("reading the transcript failed: {e}")),
        };
        let _ = done.send(report);
    });
}

/// The last `OUTPUT_KEPT` stored lines of an execution, all the pane keeps: a gap of
/// skipped lines is always inside them or older than anything the pane holds.
fn load_output(client: &Client, execution_id: i64, done: &UnboundedSender<Done>) {
    let (client, done) = (client.clone(), done.clone());
    tokio::spawn(async move {
        let path = format!("/api/v1/executions/{execution_id}/output?tail={OUTPUT_KEPT}");
        let report = match client.get::<Page<OutputLine>>(&path).await {
            Ok(page) => Done::Output { execution_id, lines: page.items },
            Err(e) => Done::Notice(format!("reading the output failed: {e}")),
        };
        let _ = done.send(report);
    });
}

fn refresh_providers(client: &Client, done: &UnboundedSender<Done>) {
    let (client, done) = (client.clone(), done.clone());
    tokio::spawn(async move {
        if let Ok(page) = client.get::<Page<crate::domain::Provider>>("/api/v1/providers?limit=500").await {
            let _ = done.send(Done::Providers(page.items));
        }
    });
}

/// Cancel, retry, pause or resume the selected execution.
fn act(client: &Client, selected: Option<(i64, ExecutionStatus)>, action: &'static str, done: &UnboundedSender<Done>) {
    let Some((id, _)) = selected else { return };
    let (client, done) = (client.clone(), done.clone());
    tokio::spawn(async move {
        let result: Result<crate::domain::Execution, ClientError> =
            client.post(&format!("/api/v1/executions/{id}/{action}"), &serde_json::json!({})).await;
        let text = match result {
            Ok(e) if action == "retry" => format!("retry of {id} queued as execution {}", e.id),
            Ok(_) => format!("{action}: execution {id} — done"),
            Err(e) => format!("{action} {id}: {e}"),
        };
        let _ = done.send(Done::Notice(text));
    });
}

/// Apply, merge or discard an isolated execution's work; the notice says what it did, or
/// why nothing was done (the conflicting files named).
/// A merge goes into the branch its base came from.
fn work(client: &Client, id: i64, action: &'static str, done: &UnboundedSender<Done>) {
    let (client, done) = (client.clone(), done.clone());
    tokio::spawn(async move {
        let path = format!("/api/v1/executions/{id}/{action}");
        let body = serde_json::json!({});
        let text = match action {
            "apply" => client.post::<AppliedWork>(&path, &body).await.map(|applied| {
                format!(
                    "applied the work of {id}: {} file(s) changed in your work tree, uncommitted",
                    applied.files.len()
                )
            }),
            "merge" => client.post::<MergedWork>(&path, &body).await.map(|merged| {
                let short = merged.commit.get(..12).unwrap_or(&merged.commit);
                format!("merged the work of {id} into {} as {short}: {} file(s)", merged.into, merged.files.len())
            }),
            _ => client
                .post::<crate::domain::Execution>(&path, &body)
                .await
                .map(|_| format!("discarded the work of {id}: its worktree and branch are removed")),
        };
        let text = text.unwrap_or_else(|e| match e {
            ClientError::Problem { detail, .. } => format!("{action} {id}: {detail}"),
            e => format!("{action} {id}: {e}"),
        });
        let _ = done.send(Done::Notice(crate::terminal::escape_line(&text).into_owned()));
    });
}

/// Approve or deny; the notice says whether this answer won.
fn decide(client: &Client, id: crate::domain::ApprovalId, approve: bool, done: &UnboundedSender<Done>) {
    let (client, done) = (client.clone(), done.clone());
    let decision = if approve { "approve" } else { "deny" };
    tokio::spawn(async move {
        let body = serde_json::json!({ "decision": decision });
        let result: Result<Approval, ClientError> = client.post(&format!("/api/v1/approvals/{id}"), &body).await;
        let text = match result {
            Ok(approval) => format!("approval {id}: {} — your answer won", approval.status.as_str()),
            Err(ClientError::Problem { code, body, .. }) if code == "already_decided" || code == "expired" => {
                let by = body["approval"]["decided_by"].as_str().unwrap_or("someone else");
                format!("approval {id}: already decided by {by} — your answer did not count")
            }
            Err(e) => format!("approval {id}: {e}"),
        };
        let _ = done.send(Done::Notice(text));
    });
}
