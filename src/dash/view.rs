//! Draws the dashboard `Model` with ratatui: a header (daemon, uptime, link, providers),
//! the pending approvals when there are any, the executions table, the selected
//! execution's output, and a footer with the keys or the last notice. Fits 80×24.

use std::time::Duration;

use chrono::Utc;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use super::model::{Focus, Link, Model};
use crate::agent::render::Tone;
use crate::domain::Word;
use crate::domain::{Approval, Execution, ExecutionStatus, OutputStream};
use crate::terminal::{escape, escape_line};

pub fn draw(frame: &mut Frame, model: &Model) {
    let pending = model.pending_approvals().len();
    let approvals_height = if pending == 0 { 0 } else { (pending.min(3) + 3) as u16 };
    let [header, approvals, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(approvals_height),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, model);
    if pending > 0 {
        draw_approvals(frame, approvals, model);
    }
    match &model.output {
        Some(_) => {
            let [table, output] =
                Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
            draw_executions(frame, table, model);
            draw_output(frame, output, model);
        }
        None => draw_executions(frame, body, model),
    }
    draw_footer(frame, footer, model);
    if let Some(approval) = model.approval_open.and_then(|id| model.approvals.get(&id)) {
        draw_approval(frame, approval);
    }
    if model.help {
        draw_help(frame);
    }
}

fn draw_header(frame: &mut Frame, area: Rect, model: &Model) {
    let (link, link_style) = match &model.link {
        Link::Connecting => ("connecting".to_owned(), Style::new().yellow()),
        Link::Live => ("live".to_owned(), Style::new().green().bold()),
        Link::Reconnecting { attempt, .. } => (format!("reconnecting (try {attempt})"), Style::new().red().bold()),
    };
    let uptime = model
        .started_at
        .map(|t| format!("up {}", duration((Utc::now() - t).to_std().unwrap_or_default())))
        .unwrap_or_default();
    let flashing = model.flash_since.is_some_and(|t| t.elapsed() < Duration::from_millis(1500));
    let title_style = if flashing { Style::new().black().on_yellow().bold() } else { Style::new().bold() };
    let first = Line::from(vec![
        Span::styled(" warden ", title_style),
        Span::raw(format!(" {}  {uptime}  ", model.url)),
        Span::styled(link, link_style),
    ]);
    let mut providers = vec![Span::raw(" ")];
    // Busy providers and those that spent today only: the ready agents' providers exist
    // whether used or not.
    let spent = |p: &crate::domain::Provider| p.spend_today.cost_usd > 0.0 || p.spend_today.output_tokens > 0;
    let busy: Vec<_> =
        model.providers.iter().filter(|p| p.running + p.queued + p.pending_approval > 0 || spent(p)).collect();
    if busy.is_empty() {
        providers.push(Span::styled("no provider busy", Style::new().dim()));
    }
    for provider in busy {
        let limit = if provider.limits.max_concurrent == 0 {
            "∞".to_owned()
        } else {
            provider.limits.max_concurrent.to_string()
        };
        providers.push(Span::styled(provider.name.clone(), Style::new().bold()));
        providers.push(Span::raw(format!(" {}/{limit} run, {} queued", provider.running, provider.queued)));
        if spent(provider) {
            providers.push(Span::styled(format!(" ${:.4} today", provider.spend_today.cost_usd), Style::new().dim()));
        }
        if provider.budget_reached {
            providers.push(Span::styled(" BUDGET REACHED", Style::new().red().bold()));
        }
        providers.push(Span::raw("   "));
    }
    frame.render_widget(Paragraph::new(vec![first, Line::from(providers)]), area);
}

fn draw_approvals(frame: &mut Frame, area: Rect, model: &Model) {
    let pending = model.pending_approvals();
    // The title column's width: what is cut is cut visibly (Enter shows all of it).
    let title_width = area.width.saturating_sub(2 + 5 + 12 + 11 + 3) as usize;
    let rows = pending.iter().map(|a| {
        let left = (a.expires_at - Utc::now()).to_std().unwrap_or_default();
        Row::new(vec![
            Cell::from(a.id.to_string()),
            Cell::from(fit(&escape_line(&a.title), title_width)),
            Cell::from(escape_line(&a.source).into_owned()),
            Cell::from(format!("{} left", duration(left))),
        ])
    });
    let selected = model.selected_approval.and_then(|id| pending.iter().position(|a| a.id == id));
    let focused = model.focus == Focus::Approvals;
    let table =
        Table::new(rows, [Constraint::Length(5), Constraint::Fill(1), Constraint::Length(12), Constraint::Length(11)])
            .block(
                Block::new()
                    .borders(Borders::ALL)
                    .border_style(if focused { Style::new().yellow() } else { Style::new() })
                    .title(
                        Line::from(format!(
                            " Approvals waiting: {} — Enter read all, a approve, d deny, Tab switch ",
                            pending.len()
                        ))
                        .bold(),
                    ),
            )
            .row_highlight_style(if focused { Style::new().reversed() } else { Style::new().underlined() });
    frame.render_stateful_widget(table, area, &mut TableState::new().with_selected(selected));
}

fn draw_executions(frame: &mut Frame, area: Rect, model: &Model) {
    let visible = model.visible_executions();
    let header = Row::new(["ID", "STATUS", "PROFILE", "WORKSPACE", "PROMPT", "TIME", "EXIT"]).bold();
    let rows = visible.iter().map(|e| {
        Row::new(vec![
            Cell::from(e.id.0.to_string()),
            Cell::from(Span::styled(e.status.as_str(), status_style(e.status))),
            Cell::from(if e.sandbox.is_unconfined() { format!("{}!", e.profile) } else { e.profile.clone() }),
            Cell::from(e.workspace.clone().unwrap_or_else(|| "-".into())),
            Cell::from(escape_line(&e.prompt.replace('\n', " ")).into_owned()),
            Cell::from(elapsed(e)),
            Cell::from(e.exit_code.map(|c| c.to_string()).unwrap_or_default()),
        ])
    });
    let selected = model.selected_execution.and_then(|id| visible.iter().position(|e| e.id.0 == id));
    let filter = if model.filter.is_empty() {
        "all".to_owned()
    } else {
        model.filter.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    };
    let focused = model.focus == Focus::Executions;
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(16),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Fill(1),
            Constraint::Length(7),
            Constraint::Length(4),
        ],
    )
    .header(header)
    .block(
        Block::new()
            .borders(Borders::ALL)
            .title(format!(" Executions ({}) — filter: {filter} ", visible.len()))
            .border_style(if focused { Style::new().cyan() } else { Style::new() }),
    )
    .row_highlight_style(if focused { Style::new().reversed() } else { Style::new().underlined() });
    frame.render_stateful_widget(table, area, &mut TableState::new().with_selected(selected));
}

fn draw_output(frame: &mut Frame, area: Rect, model: &Model) {
    let Some(pane) = &model.output else { return };
    let execution = model.executions.get(&pane.execution_id);
    let agent = execution.and_then(|e| e.agent.as_ref());
    let transcript = agent.is_some() && !pane.raw;
    let inner_height = area.height.saturating_sub(2) as usize;
    let held = if transcript { pane.transcript.len() } else { pane.lines.len() };
    let end = held.saturating_sub(pane.scroll_back);
    let start = end.saturating_sub(inner_height);
    let lines: Vec<Line> = if transcript {
        pane.transcript[start..end]
            .iter()
            .map(|(tone, text)| {
                let style = match tone {
                    Tone::Message => Style::new(),
                    Tone::Call => Style::new().cyan(),
                    Tone::Result { ok: true } => Style::new().dim(),
                    Tone::Result { ok: false } => Style::new().red(),
                    Tone::Marker { ok: true } => Style::new().green(),
                    Tone::Marker { ok: false } => Style::new().red().bold(),
                };
                Line::styled(text.clone(), style)
            })
            .collect()
    } else {
        pane.lines
            .range(start..end)
            .map(|l| match l.stream {
                OutputStream::Stdout => Line::raw(escape_line(&l.text).into_owned()),
                OutputStream::Stderr => Line::styled(escape_line(&l.text).into_owned(), Style::new().red()),
            })
            .collect()
    };
    let mut title = format!(" {} of {} ", if transcript { "Transcript" } else { "Output" }, pane.execution_id);
    if let Some(e) = execution {
        title.push_str(&format!("({}) ", e.status));
        if let Some(agent) = agent {
            // The agent's own totals once it has ended; the transcript's sums until then.
            let (tokens, cost) = match agent.result {
                Some(_) => (agent.tokens, agent.cost_usd),
                None => (pane.spent, pane.cost_usd),
            };
            title.push_str(&format!("{}+{} tokens ", tokens.all_input(), tokens.output));
            if let Some(cost) = cost {
                title.push_str(&format!("${cost:.4} "));
            }
            title.push_str(if transcript { "· t raw output " } else { "· t transcript " });
        }
        if e.sandbox.is_unconfined() {
            title.push_str("UNSANDBOXED ");
        }
        if e.pruned_at.is_some() {
            title.push_str("· output removed by retention ");
        }
        if let Some(totals) = e.changes.as_ref().and_then(|c| c.totals) {
            title.push_str(&format!("+{} −{} in {} files ", totals.additions, totals.deletions, totals.files));
        }
        if let Some(branch) = &e.branch {
            title.push_str(&format!("on {} (A apply, M merge, D discard) ", escape_line(branch)));
        }
    }
    title.push_str(if pane.scroll_back == 0 { "— following " } else { "— scrolled (End follows) " });
    let block = Block::new().borders(Borders::ALL).title(title);
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, model: &Model) {
    let line = if let Some(input) = &model.filter_input {
        Line::from(vec![
            Span::styled(" filter statuses: ", Style::new().bold()),
            Span::raw(input.clone()),
            Span::raw("▏"),
        ])
    } else if let Some((notice, _)) = &model.notice {
        Line::from(Span::styled(format!(" {notice}"), Style::new().add_modifier(Modifier::BOLD)))
    } else {
        Line::from(" ↑↓ move  Enter output  c cancel  r retry  p pause/resume  f// filter  ? help  q quit").dim()
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// `text` in at most `width` characters, ending in `…` when some is cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// The approval shown whole over the screen: who asks, the title and every detail,
/// wrapped, with the keys to decide.
fn draw_approval(frame: &mut Frame, approval: &Approval) {
    let mut text = vec![
        Line::from(format!("asked by {} ({})", approval.asker(), escape_line(&approval.source))).dim(),
        Line::raw(""),
        Line::from(escape_line(&approval.title).into_owned()).bold(),
        Line::raw(""),
    ];
    for (name, value) in approval.detail_fields() {
        let value = escape(&value).replace('\t', "    ");
        let mut lines = value.lines();
        text.push(Line::from(vec![
            Span::styled(format!("{}: ", escape_line(&name)), Style::new().bold()),
            Span::raw(lines.next().unwrap_or("").to_owned()),
        ]));
        text.extend(lines.map(|line| Line::raw(format!("  {line}"))));
    }
    let area = frame.area();
    let popup = Rect { x: 1, y: 1, width: area.width.saturating_sub(2), height: area.height.saturating_sub(2) };
    let block = Block::new()
        .borders(Borders::ALL)
        .border_style(Style::new().yellow())
        .title(Line::from(format!(" Approval {} — a approve, d deny, Esc close ", approval.id)).bold());
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).block(block), popup);
}

fn draw_help(frame: &mut Frame) {
    let text = vec![
        Line::from("warden dash — keys").bold(),
        Line::raw(""),
        Line::raw("↑/k ↓/j      move in the focused table"),
        Line::raw("Tab          switch between approvals and executions"),
        Line::raw("Enter        (approvals) read the whole request first"),
        Line::raw("Enter        show the selected execution's output"),
        Line::raw("Esc          close the output (or this help)"),
        Line::raw("t            an agent's transcript, or its raw output"),
        Line::raw("PgUp/PgDn    scroll the output; End follows the tail"),
        Line::raw("a / d        approve / deny the selected approval"),
        Line::raw("c            cancel the selected execution"),
        Line::raw("r            retry it (a new execution)"),
        Line::raw("p            pause or resume it"),
        Line::raw("A / M / D    apply / merge / discard an isolated one's work"),
        Line::raw("f            cycle the status filter"),
        Line::raw("/            type statuses to show (Enter applies)"),
        Line::raw("q            quit"),
        Line::raw(""),
        Line::raw("A profile marked ! ran unsandboxed (sandbox off, or no Landlock)."),
    ];
    let area = frame.area();
    let width = 60.min(area.width);
    let height = (text.len() as u16 + 2).min(area.height);
    let popup = Rect { x: (area.width - width) / 2, y: (area.height - height) / 2, width, height };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: false }).block(Block::new().borders(Borders::ALL).title(" Help ")),
        popup,
    );
}

pub fn status_style(status: ExecutionStatus) -> Style {
    match status {
        ExecutionStatus::Running => Style::new().fg(Color::Cyan).bold(),
        ExecutionStatus::Queued => Style::new().fg(Color::Blue),
        ExecutionStatus::PendingApproval => Style::new().fg(Color::Yellow).bold(),
        ExecutionStatus::Paused => Style::new().fg(Color::Magenta),
        ExecutionStatus::Succeeded => Style::new().fg(Color::Green),
        ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Interrupted => {
            Style::new().fg(Color::Red)
        }
        ExecutionStatus::Cancelled | ExecutionStatus::Denied => Style::new().fg(Color::DarkGray),
    }
}

/// Running time so far, or how long it took.
fn elapsed(e: &Execution) -> String {
    let Some(started) = e.started_at else { return String::new() };
    let end = e.finished_at.unwrap_or_else(Utc::now);
    duration((end - started).to_std().unwrap_or_default())
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{}.{}s", s, d.subsec_millis() / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}
