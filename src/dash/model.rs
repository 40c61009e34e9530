//! What the terminal dashboard shows, built from REST snapshots and then kept current by
//! events. Pure data: the view draws it, `dash::run` feeds it; nothing here touches the
//! network or the terminal, so it is tested on its own.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Utc};

use serde::Deserialize;

use crate::agent::render::{entry_lines, Tone};
use crate::domain::Word;
use crate::domain::{
    Approval, ApprovalId, ApprovalStatus, Envelope, Execution, ExecutionId, ExecutionStatus, OutputLine, OutputStream,
    Provider,
};
use crate::domain::{Tokens, Usage};

/// Lines of the selected execution's output kept in memory.
pub const OUTPUT_KEPT: usize = 5000;

/// The data of an `execution.output` event; its time is the event's.
#[derive(Deserialize)]
struct LiveLine {
    n: u64,
    stream: OutputStream,
    text: String,
}

/// The connection to the daemon, as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Live,
    Reconnecting { attempt: u32, error: String },
}

/// Which table keys act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Executions,
    Approvals,
}

/// The output pane of one execution.
#[derive(Debug, Default)]
pub struct OutputPane {
    pub execution_id: i64,
    pub lines: VecDeque<OutputLine>,
    /// The last line number held (lines arrive from the history and live; each once).
    pub last_n: u64,
    /// Lines scrolled up from the tail; 0 follows the tail.
    pub scroll_back: usize,
    /// Live lines the daemon skipped for this slow client; refetched from the history.
    pub gaps: u64,
    /// For an agent execution: its transcript as lines, and the last agent event's seq
    /// in it (entries come from the history and live; each once).
    pub transcript: Vec<(Tone, String)>,
    pub transcript_seq: u64,
    /// What the transcript's `agent.usage` entries add up to (the running totals while
    /// the execution's own summary is not yet final).
    pub spent: Tokens,
    pub cost_usd: Option<f64>,
    /// Showing the raw output instead of the transcript (`t` toggles).
    pub raw: bool,
}

impl OutputPane {
    /// Adds an agent event's lines to the transcript, once.
    pub fn push_entry(&mut self, event: &Envelope) {
        if event.seq <= self.transcript_seq {
            return;
        }
        self.transcript_seq = event.seq;
        if event.kind == "agent.usage" {
            if let Ok(usage) = Usage::deserialize(&event.data) {
                self.spent.add(&usage.tokens());
                if let Some(cost) = usage.cost_usd {
                    self.cost_usd = Some(self.cost_usd.unwrap_or(0.0) + cost);
                }
            }
        }
        self.transcript.extend(entry_lines(&event.kind, &event.data));
        let excess = self.transcript.len().saturating_sub(OUTPUT_KEPT);
        self.transcript.drain(..excess);
    }

    pub fn push(&mut self, line: OutputLine) {
        if line.n <= self.last_n {
            return;
        }
        self.last_n = line.n;
        self.lines.push_back(line);
        while self.lines.len() > OUTPUT_KEPT {
            self.lines.pop_front();
        }
    }
}

#[derive(Debug)]
pub struct Model {
    pub url: String,
    pub started_at: Option<DateTime<Utc>>,
    pub link: Link,
    /// The last event seq seen: a reconnect resumes after it.
    pub last_seq: Option<u64>,
    pub providers: Vec<Provider>,
    pub executions: BTreeMap<i64, Execution>,
    pub approvals: BTreeMap<ApprovalId, Approval>,
    /// Statuses shown; empty shows all.
    pub filter: Vec<ExecutionStatus>,
    /// Text typed after `/`, while typing.
    pub filter_input: Option<String>,
    /// The selected row of each table, by id.
    pub selected_execution: Option<i64>,
    pub selected_approval: Option<ApprovalId>,
    pub focus: Focus,
    pub output: Option<OutputPane>,
    pub help: bool,
    /// The approval shown whole (Enter on the approvals table), to read before deciding.
    pub approval_open: Option<ApprovalId>,
    /// `D` was pressed on this execution: `y` discards its work, any other key does not.
    pub confirm_discard: Option<i64>,
    /// A one-line message at the bottom (what the last action did), and since when.
    pub notice: Option<(String, Instant)>,
    /// When an approval last arrived (the header flashes for a moment).
    pub flash_since: Option<Instant>,
    /// Execution events seen since providers were last fetched.
    pub providers_stale: bool,
}

impl Model {
    pub fn new(url: String) -> Self {
        Model {
            url,
            started_at: None,
            link: Link::Connecting,
            last_seq: None,
            providers: Vec::new(),
            executions: BTreeMap::new(),
            approvals: BTreeMap::new(),
            filter: Vec::new(),
            filter_input: None,
            selected_execution: None,
            selected_approval: None,
            focus: Focus::Executions,
            output: None,
            help: false,
            approval_open: None,
            confirm_discard: None,
            notice: None,
            flash_since: None,
            providers_stale: false,
        }
    }

    /// Executions shown, newest first.
    pub fn visible_executions(&self) -> Vec<&Execution> {
        self.executions.values().rev().filter(|e| self.filter.is_empty() || self.filter.contains(&e.status)).collect()
    }

    pub fn pending_approvals(&self) -> Vec<&Approval> {
        self.approvals.values().filter(|a| a.status == ApprovalStatus::Pending).collect()
    }

    pub fn selected(&self) -> Option<&Execution> {
        self.selected_execution.and_then(|id| self.executions.get(&id))
    }

    /// Keeps a valid selection in each table (the first row when the old one is gone).
    pub fn fix_selection(&mut self) {
        let visible: Vec<i64> = self.visible_executions().iter().map(|e| e.id.0).collect();
        if !self.selected_execution.is_some_and(|id| visible.contains(&id)) {
            self.selected_execution = visible.first().copied();
        }
        let pending: Vec<ApprovalId> = self.pending_approvals().iter().map(|a| a.id).collect();
        if !self.selected_approval.is_some_and(|id| pending.contains(&id)) {
            self.selected_approval = pending.first().copied();
        }
        if pending.is_empty() {
            self.focus = Focus::Executions;
        }
    }

    /// Moves the selection of the focused table by `delta` rows.
    pub fn move_selection(&mut self, delta: i64) {
        let (ids, current): (Vec<i64>, Option<i64>) = match self.focus {
            Focus::Executions => (self.visible_executions().iter().map(|e| e.id.0).collect(), self.selected_execution),
            Focus::Approvals => {
                (self.pending_approvals().iter().map(|a| a.id.0).collect(), self.selected_approval.map(|a| a.0))
            }
        };
        if ids.is_empty() {
            return;
        }
        let at = current.and_then(|id| ids.iter().position(|&i| i == id)).unwrap_or(0) as i64;
        let next = ids[(at + delta).clamp(0, ids.len() as i64 - 1) as usize];
        match self.focus {
            Focus::Executions => self.selected_execution = Some(next),
            Focus::Approvals => self.selected_approval = Some(ApprovalId(next)),
        }
    }

    /// Applies one event. Returns true when a new approval arrived (ring the bell).
    pub fn apply(&mut self, event: &Envelope) -> bool {
        if self.last_seq.is_some_and(|seen| event.seq <= seen) {
            return false;
        }
        self.last_seq = Some(event.seq);
        let kind = event.kind.as_str();
        let mut rang = false;
        if kind == "execution.output" {
            // Output changes neither table, so the selections stay as they are.
            if let Some(pane) = self.output.as_mut().filter(|p| Some(ExecutionId(p.execution_id)) == event.execution_id)
            {
                if let Ok(line) = LiveLine::deserialize(&event.data) {
                    pane.push(OutputLine { n: line.n, stream: line.stream, text: line.text, ts: event.ts });
                }
            }
            return false;
        } else if kind.starts_with("agent.") {
            if let Some(pane) = self.output.as_mut().filter(|p| Some(ExecutionId(p.execution_id)) == event.execution_id)
            {
                pane.push_entry(event);
            }
            if kind == "agent.usage" {
                self.providers_stale = true;
            }
            return false;
        } else if kind.starts_with("provider.") {
            self.providers_stale = true;
            return false;
        } else if kind == "execution.changes" {
            if let Some(execution) = event.execution_id.and_then(|id| self.executions.get_mut(&id.0)) {
                execution.changes = serde_json::from_value(event.data["changes"].clone()).ok();
            }
        } else if matches!(kind, "execution.prepared" | "execution.merged") {
            // Not an execution: an isolated execution's worktree made, or its branch merged.
            if let Some(execution) = event.execution_id.and_then(|id| self.executions.get_mut(&id.0)) {
                let text = |key: &str| event.data[key].as_str().map(str::to_owned);
                (execution.worktree, execution.branch) = (text("worktree"), text("branch"));
            }
        } else if kind == "execution.deleted" {
            if let Some(id) = event.execution_id {
                self.executions.remove(&id.0);
            }
        } else if kind.starts_with("execution.") {
            if let Ok(execution) = serde_json::from_value::<Execution>(event.data.clone()) {
                self.executions.insert(execution.id.0, execution);
                self.providers_stale = true;
            }
        } else if kind.starts_with("approval.") {
            if let Ok(approval) = serde_json::from_value::<Approval>(event.data.clone()) {
                if approval.status == ApprovalStatus::Pending && !self.approvals.contains_key(&approval.id) {
                    rang = true;
                    self.flash_since = Some(Instant::now());
                }
                if approval.status == ApprovalStatus::Pending {
                    self.approvals.insert(approval.id, approval);
                } else {
                    self.approvals.remove(&approval.id);
                }
            }
        }
        self.fix_selection();
        rang
    }

    /// Replaces what a REST snapshot covers (at start and after each reconnect).
    pub fn load(&mut self, executions: Vec<Execution>, approvals: Vec<Approval>, providers: Vec<Provider>) {
        self.executions = executions.into_iter().map(|e| (e.id.0, e)).collect();
        self.approvals =
            approvals.into_iter().filter(|a| a.status == ApprovalStatus::Pending).map(|a| (a.id, a)).collect();
        self.providers = providers;
        self.fix_selection();
    }

    pub fn notify(&mut self, text: impl Into<String>) {
        self.notice = Some((text.into(), Instant::now()));
    }

    /// Parses the `/` filter: statuses separated by commas or spaces (prefixes work).
    pub fn apply_filter_text(&mut self, text: &str) -> Result<(), String> {
        let mut statuses = Vec::new();
        for word in text.split([',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
            let matching: Vec<ExecutionStatus> =
                ExecutionStatus::all().iter().copied().filter(|s| s.as_str().starts_with(word)).collect();
            if matching.is_empty() {
                return Err(format!("no status starts with {word:?}"));
            }
            statuses.extend(matching);
        }
        self.filter = statuses;
        self.fix_selection();
        Ok(())
    }

    /// `f`: all → running → queued → pending_approval → failed → succeeded → all.
    pub fn cycle_filter(&mut self) {
        use ExecutionStatus::*;
        let cycle: [&[ExecutionStatus]; 6] =
            [&[], &[Running, Paused], &[Queued], &[PendingApproval], &[Failed, TimedOut, Interrupted], &[Succeeded]];
        let at = cycle.iter().position(|f| *f == self.filter.as_slice()).unwrap_or(0);
        self.filter = cycle[(at + 1) % cycle.len()].to_vec();
        self.fix_selection();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Priority;

    fn execution(id: i64, status: ExecutionStatus) -> Execution {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status, "profile": "shell", "provider": "local", "workspace": null,
            "cwd": "/tmp", "prompt": "p", "argv": ["sh"], "timeout_s": null, "exit_code": null, "error": null,
            "created_at": "2026-01-01T00:00:00Z", "started_at": null, "finished_at": null,
            "queue_position": null, "retry_of": null, "session_id": null, "approval_id": null
        }))
        .unwrap()
    }

    fn event(seq: u64, kind: &str, data: serde_json::Value) -> Envelope {
        Envelope {
            seq,
            ts: Utc::now(),
            kind: kind.into(),
            priority: Priority::Normal,
            execution_id: data["id"].as_i64().map(crate::domain::ExecutionId),
            approval_id: None,
            session_id: None,
            workspace: None,
            data,
        }
    }

    #[test]
    fn events_update_executions_once_and_in_order() {
        let mut model = Model::new("u".into());
        let queued = serde_json::to_value(execution(1, ExecutionStatus::Queued)).unwrap();
        let running = serde_json::to_value(execution(1, ExecutionStatus::Running)).unwrap();
        model.apply(&event(5, "execution.queued", queued.clone()));
        model.apply(&event(6, "execution.started", running));
        // A replayed older event does not move it back.
        model.apply(&event(5, "execution.queued", queued));
        assert_eq!(model.executions[&1].status, ExecutionStatus::Running);
        assert_eq!(model.selected_execution, Some(1));
        assert!(model.providers_stale);
    }

    #[test]
    fn filters_cycle_and_parse() {
        let mut model = Model::new("u".into());
        model.load(
            vec![execution(1, ExecutionStatus::Succeeded), execution(2, ExecutionStatus::Running)],
            vec![],
            vec![],
        );
        assert_eq!(model.visible_executions().len(), 2);
        model.cycle_filter();
        assert_eq!(model.visible_executions().iter().map(|e| e.id.0).collect::<Vec<_>>(), vec![2]);
        model.apply_filter_text("succ").unwrap();
        assert_eq!(model.visible_executions().iter().map(|e| e.id.0).collect::<Vec<_>>(), vec![1]);
        assert_eq!(model.selected_execution, Some(1));
        assert!(model.apply_filter_text("bogus").is_err());
    }

    #[test]
    fn output_keeps_each_line_once_and_a_bounded_tail() {
        let mut pane = OutputPane { execution_id: 1, ..Default::default() };
        let line =
            |n| OutputLine { n, stream: crate::domain::OutputStream::Stdout, text: n.to_string(), ts: Utc::now() };
        for n in 1..=(OUTPUT_KEPT as u64 + 10) {
            pane.push(line(n));
        }
        pane.push(line(3));
        assert_eq!(pane.lines.len(), OUTPUT_KEPT);
        assert_eq!(pane.lines.front().unwrap().n, 11);
        assert_eq!(pane.last_n, OUTPUT_KEPT as u64 + 10);
    }
}
