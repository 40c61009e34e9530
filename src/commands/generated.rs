//! `warden completions SHELL` and `warden man`: a shell completion script and the manual
//! page, generated from the command line's clap definition (`cli.rs`), so they never
//! drift from `--help`.

use std::io::Write;

use clap::CommandFactory;

use super::Outcome;
use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<Outcome> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "warden", &mut std::io::stdout().lock());
    Ok(Outcome::Done)
}

/// The page for `warden`: what it is, its global options and every command with what it
/// does (`warden COMMAND --help` has each one's options).
pub fn man_page() -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    writeln!(out, ".SH \"SEE ALSO\"\n\\fBwarden COMMAND \\-\\-help\\fR for each command's options.")?;
    Ok(Outcome::Done)
}
