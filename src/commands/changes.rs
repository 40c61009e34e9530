//! `warden diff`: what an execution changed in its git work tree, as a diff or a stat,
//! coloured when written to a terminal.

use std::io::{IsTerminal, Write};

use super::{Outcome, Remote};
use crate::cli::ColorChoice;
use crate::domain::{ChangeStatus, ChangesReport};
use crate::terminal::{escape, escape_line};

pub struct DiffArgs {
    pub id: i64,
    pub path: Option<String>,
    pub stat: bool,
    pub context: u32,
    pub color: ColorChoice,
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

pub async fn diff(remote: &Remote, args: DiffArgs) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    let colour = match args.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut out = std::io::stdout().lock();
    if args.stat {
        let report: ChangesReport = client.get(&format!("/api/v1/executions/{}/changes", args.id)).await?;
        let Some(changes) = report.changes else {
            eprintln!("warden: no changes to show: {}", report.reason.unwrap_or_default());
            return Ok(Outcome::Code(1));
        };
        let files: Vec<_> = changes
            .files
            .iter()
            .filter(|f| args.path.as_ref().is_none_or(|p| &f.path == p || f.old_path.as_ref() == Some(p)))
            .collect();
        let shown: Vec<String> = files
            .iter()
            .map(|f| match &f.old_path {
                Some(old) => format!("{} => {}", escape_line(old), escape_line(&f.path)),
                None => escape_line(&f.path).into_owned(),
            })
            .collect();
        let width = shown.iter().map(|s| s.chars().count()).max().unwrap_or(0);
        for (file, name) in files.iter().zip(&shown) {
            let letter = match file.status {
                ChangeStatus::Added => "A",
                ChangeStatus::Modified => "M",
                ChangeStatus::Deleted => "D",
                ChangeStatus::Renamed => "R",
            };
            let counts = if file.binary {
                "binary".to_owned()
            } else if colour {
                format!("{GREEN}+{}{RESET} {RED}-{}{RESET}", file.additions, file.deletions)
            } else {
                format!("+{} -{}", file.additions, file.deletions)
            };
            writeln!(out, "{letter} {name:<width$}  {counts}")?;
        }
        let (additions, deletions) = files.iter().fold((0, 0), |(a, d), f| (a + f.additions, d + f.deletions));
        let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        writeln!(
            out,
            "{}, {}(+), {}(-){}",
            plural(files.len() as u64, "file changed", "files changed"),
            plural(additions, "insertion", "insertions"),
            plural(deletions, "deletion", "deletions"),
            if changes.live { " so far (still running)" } else { "" }
        )?;
        return Ok(Outcome::Done);
    }
    let mut query = format!("?context={}", args.context);
    if let Some(path) = &args.path {
        query.push_str("&path=");
        query.push_str(&serde_urlencoded::to_string([("", path)])?[1..]);
    }
    let text = client.get_text(&format!("/api/v1/executions/{}/diff{query}", args.id)).await?;
    for line in text.lines() {
        // The lines are the agent's: shown, never obeyed (warden's own colours only).
        let line = escape(line);
        let line = line.as_ref();
        let style = if !colour {
            None
        } else if line.starts_with("diff --git") || line.starts_with("+++") || line.starts_with("---") {
            Some(BOLD)
        } else if line.starts_with('+') {
            Some(GREEN)
        } else if line.starts_with('-') {
            Some(RED)
        } else if line.starts_with("@@") {
            Some(CYAN)
        } else {
            None
        };
        match style {
            Some(style) => writeln!(out, "{style}{line}{RESET}")?,
            None => writeln!(out, "{line}")?,
        }
    }
    Ok(Outcome::Done)
}
