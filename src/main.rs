//! The `warden` command: parse the command line and hand it to `commands`.

use clap::Parser;
use warden::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A client command whose reader goes away (`warden ls | head -1`) ends quietly,
        // as other Unix tools do, instead of panicking on the broken pipe. Sockets are
        // written with MSG_NOSIGNAL, so only stdout and stderr can raise it; the daemon
        // keeps ignoring it.
        // SAFETY: setting a signal's disposition to its default, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let code = warden::commands::run(cli);
    std::process::exit(code);
}
