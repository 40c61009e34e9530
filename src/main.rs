//! The `warden` command: parse the command line and hand it to `commands`.

use clap::Parser;

fn main() {
    let cli = warden::cli::Cli::parse();
    let code = warden::commands::run(cli);
    std::process::exit(code);
}
