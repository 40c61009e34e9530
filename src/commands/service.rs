//! `warden service install|uninstall|status`: a daemon that comes back. On Linux a
//! systemd user unit (`Restart=on-failure`, this data dir, its log), on macOS a launchd
//! agent (`KeepAlive` unless it exited cleanly); install writes the file and prints the
//! one command that enables it, status compares the file with what install would write
//! and asks the service manager. `warden start` keeps working without either.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Outcome;
use crate::cli::ServiceCommand;
use crate::home::Home;

/// The service's name: `warden.service`, or `dev.warden.daemon` for launchd.
const UNIT: &str = "warden.service";
const LAUNCHD_LABEL: &str = "dev.warden.daemon";

/// Where the service file goes and what it says, for this binary and data dir.
struct ServiceFile {
    path: PathBuf,
    text: String,
    enable: String,
    disable: String,
}

impl ServiceFile {
    fn for_this(home: &Home) -> anyhow::Result<ServiceFile> {
        let exe = std::env::current_exe()?.canonicalize()?;
        let path_env = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        if cfg!(target_os = "macos") {
            let dir = home_dir()?.join("Library/LaunchAgents");
            let path = dir.join(format!("{LAUNCHD_LABEL}.plist"));
            Ok(ServiceFile {
                text: launchd_plist(&exe, home.dir(), &path_env),
                enable: format!("launchctl bootstrap gui/$(id -u) {}", path.display()),
                disable: format!("launchctl bootout gui/$(id -u) {}", path.display()),
                path,
            })
        } else {
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map_or_else(|| home_dir().map(|h| h.join(".config")), Ok)?;
            Ok(ServiceFile {
                path: config.join("systemd/user").join(UNIT),
                text: systemd_unit(&exe, home.dir(), &path_env),
                enable: "systemctl --user daemon-reload && systemctl --user enable --now warden".into(),
                disable: "systemctl --user disable --now warden".into(),
            })
        }
    }
}

fn home_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from).ok_or_else(|| anyhow::anyhow!("HOME is not set"))
}

/// A value for a systemd unit line: quoted, with `\`, `"` and `%` (a specifier) escaped.
fn systemd_quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%"))
}

fn systemd_unit(exe: &Path, home: &Path, path_env: &str) -> String {
    let log = home.join("warden.log");
    format!(
        "# Written by `warden service install`; `warden service uninstall` removes it.\n\
         [Unit]\n\
         Description=warden: runs and supervises AI coding agents\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart={} --home {} serve --log-file {}\n\
         Environment={}\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         # warden stops its agents within its shutdown grace; systemd waits a little longer.\n\
         TimeoutStopSec=60\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        systemd_quoted(&exe.to_string_lossy()),
        systemd_quoted(&home.to_string_lossy()),
        systemd_quoted(&log.to_string_lossy()),
        systemd_quoted(&format!("PATH={path_env}")),
    )
}

fn xml_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn launchd_plist(exe: &Path, home: &Path, path_env: &str) -> String {
    let arguments = [
        exe.to_string_lossy().into_owned(),
        "--home".into(),
        home.to_string_lossy().into_owned(),
        "serve".into(),
        "--log-file".into(),
        home.join("warden.log").to_string_lossy().into_owned(),
    ];
    let arguments: String = arguments.iter().map(|a| format!("    <string>{}</string>\n", xml_escaped(a))).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \x20 <key>Label</key><string>{LAUNCHD_LABEL}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{arguments}  </array>\n\
         \x20 <key>EnvironmentVariables</key><dict><key>PATH</key><string>{}</string></dict>\n\
         \x20 <key>RunAtLoad</key><true/>\n\
         \x20 <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
         \x20 <key>StandardErrorPath</key><string>{}</string>\n\
         </dict>\n</plist>\n",
        xml_escaped(path_env),
        xml_escaped(&home.join("warden.service.err").to_string_lossy()),
    )
}

pub fn service(home: &Home, command: ServiceCommand) -> anyhow::Result<Outcome> {
    let file = ServiceFile::for_this(home)?;
    match command {
        ServiceCommand::Install => {
            if let Some(dir) = file.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let existed = file.path.exists();
            std::fs::write(&file.path, &file.text)?;
            println!("{} {}", if existed { "updated" } else { "wrote" }, file.path.display());
            println!("enable it (and start it now) with:\n  {}", file.enable);
            println!("stop a daemon started with `warden start` first: one daemon per data dir");
            Ok(Outcome::Done)
        }
        ServiceCommand::Uninstall => {
            if !file.path.exists() {
                println!("no service file at {}: nothing to remove", file.path.display());
                return Ok(Outcome::Done);
            }
            std::fs::remove_file(&file.path)?;
            println!("removed {}", file.path.display());
            println!("if it was enabled, stop it and forget it with:\n  {}", file.disable);
            Ok(Outcome::Done)
        }
        ServiceCommand::Status => {
            let written = std::fs::read_to_string(&file.path).ok();
            match &written {
                None => println!("not installed ({} does not exist): warden service install", file.path.display()),
                Some(text) if *text == file.text => println!("installed: {} (current)", file.path.display()),
                Some(_) => println!(
                    "installed: {} (written for another binary, data dir or PATH: warden service install rewrites it)",
                    file.path.display()
                ),
            }
            if !cfg!(target_os = "macos") {
                for (question, what) in [("is-enabled", "enabled"), ("is-active", "active")] {
                    let answer = Command::new("systemctl")
                        .args(["--user", question, UNIT])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
                    match answer {
                        Ok(answer) if !answer.is_empty() => println!("{what}: {answer}"),
                        _ => println!("{what}: unknown (no systemd user manager answers)"),
                    }
                }
            }
            Ok(if written.is_some() { Outcome::Done } else { Outcome::NotRunning })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_values_are_quoted_against_spaces_quotes_and_specifiers() {
        let unit = systemd_unit(Path::new("/opt/my tools/warden"), Path::new("/home/a \"b\"/100%"), "/usr/bin");
        assert!(unit.contains(r#"ExecStart="/opt/my tools/warden" --home "/home/a \"b\"/100%%" serve"#), "{unit}");
        assert!(unit.contains("Restart=on-failure"));
        let plist = launchd_plist(Path::new("/x/warden"), Path::new("/h/<d>"), "/bin");
        assert!(plist.contains("<string>/h/&lt;d&gt;</string>"), "{plist}");
    }
}
