//! `warden doctor`: one screen of what breaks warden in the field, each line ok, warn or
//! fail with what to do. It reads the data dir, the config and the database (read-only)
//! itself and asks a running daemon for its health; it never changes anything. Exit
//! status 1 when something fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Serialize;

use super::{Outcome, Remote};
use crate::agent::profiles::program_installed;
use crate::config::{Config, Overrides};
use crate::domain::Origin;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's finding.
#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    level: Level,
    detail: String,
    /// What to do about it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
    Finding { check, level: Level::Ok, detail: detail.into(), fix: None }
}

fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { check, level: Level::Warn, detail: detail.into(), fix: Some(fix.into()) }
}

fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding { check, level: Level::Fail, detail: detail.into(), fix: Some(fix.into()) }
}

/// The oldest git whose `merge-tree --write-tree` isolation relies on.
const GIT_NEEDED: (u32, u32) = (2, 38);

pub async fn doctor(remote: &Remote, json: bool) -> anyhow::Result<Outcome> {
    let home = &remote.home;
    let mut findings = vec![data_dir(home.dir()), token_file(&home.token_path())];
    let config = Config::load(home.clone(), &Overrides::default());
    findings.push(match &config {
        Ok(_) => ok("config", format!("{} reads", home.config_path().display())),
        Err(e) => fail("config", e.clone(), "fix config.toml: the daemon will not start with it"),
    });
    findings.push(daemon(remote).await);
    if let Ok(config) = &config {
        findings.push(port(remote, config));
    }
    findings.push(match crate::sandbox::kernel_abi() {
        Some(abi) => ok("sandbox", format!("Landlock ABI {abi}")),
        None => warn(
            "sandbox",
            "this kernel has no Landlock: executions run unsandboxed",
            "use Linux 5.13 or newer with Landlock enabled (lsm=landlock)",
        ),
    });
    findings.push(git_version());
    findings.push(disk_space(home.dir()));
    findings.extend(database(&home.db_path()));
    if let Ok(config) = &config {
        findings.push(retention(config, &home.db_path()));
        findings.extend(agent_binaries(config));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for finding in &findings {
            let level = match finding.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("{level}  {:<10} {}", finding.check, finding.detail);
            if let Some(fix) = &finding.fix {
                println!("      {:<10} → {fix}", "");
            }
        }
    }
    Ok(if findings.iter().any(|f| f.level == Level::Fail) { Outcome::Code(1) } else { Outcome::Done })
}

fn data_dir(dir: &Path) -> Finding {
    private("data dir", dir, 0o700, Level::Warn, format!("chmod 700 {}", dir.display()))
}

fn token_file(path: &Path) -> Finding {
    let fix =
        format!("chmod 600 {} (and consider it leaked: delete it and restart warden for a new one)", path.display());
    private("token", path, 0o600, Level::Fail, fix)
}

/// Whether `path` is closed to other users (`mode`, as warden makes it); when it is not,
/// a finding at `level` with `fix`.
fn private(check: &'static str, path: &Path, mode: u32, level: Level, fix: String) -> Finding {
    match std::fs::metadata(path) {
        Err(_) => warn(check, format!("{} does not exist yet", path.display()), "warden start makes it"),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Finding {
            check,
            level,
            detail: format!("{} is open to other users (mode {:o})", path.display(), meta.permissions().mode() & 0o777),
            fix: Some(fix),
        },
        Ok(_) => ok(check, format!("{} (mode {mode:o})", path.display())),
    }
}

/// The port: the running daemon's, or the configured one free for the next start (a
/// busy one makes warden fall back to a free port, so its URL changes).
fn port(remote: &Remote, config: &Config) -> Finding {
    let wanted = std::net::SocketAddr::new(config.host, config.port);
    if remote.home.running_pid().is_some() {
        if let Ok(info) = remote.home.read_server_info() {
            return ok("port", format!("the daemon listens on port {}", info.port));
        }
    }
    match std::net::TcpListener::bind(wanted) {
        Ok(_) => ok("port", format!("{wanted} is free")),
        Err(e) => warn(
            "port",
            format!("{wanted} is taken ({e}): warden would start on another port"),
            format!("stop what listens on {} or set server.port in config.toml", config.port),
        ),
    }
}

async fn daemon(remote: &Remote) -> Finding {
    if remote.home.running_pid().is_none() && remote.url.is_none() {
        return warn("daemon", "not running", "warden start");
    }
    match remote.client() {
        Ok(client) => match client.health().await {
            Ok(_) => ok("daemon", format!("answers at {}", client.base_url())),
            Err(e) => fail("daemon", format!("does not answer: {e}"), "see its log (warden start -v), or restart it"),
        },
        Err(e) => fail("daemon", format!("cannot be reached: {e}"), "warden stop; warden start"),
    }
}

fn git_version() -> Finding {
    let output = std::process::Command::new("git").arg("--version").output();
    let text = match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => return warn("git", "git is not on PATH", "install git: changes, diffs and isolation need it"),
    };
    let version: Vec<u32> = text
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .split('.')
        .take(2)
        .map(|part| part.parse().unwrap_or(0))
        .collect();
    match version[..] {
        [major, minor] if (major, minor) >= GIT_NEEDED => ok("git", text),
        _ => warn(
            "git",
            format!("{text}: isolation (merge-tree --write-tree) needs {}.{} or newer", GIT_NEEDED.0, GIT_NEEDED.1),
            "upgrade git",
        ),
    }
}

fn disk_space(dir: &Path) -> Finding {
    let at = dir.ancestors().find(|d| d.exists()).unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(at) {
        Ok(stats) => {
            let free = stats.blocks_available() * stats.fragment_size();
            let mib = free / (1 << 20);
            if mib < 100 {
                fail("disk", format!("{mib} MiB free for {}", at.display()), "free some space: writes fail when full")
            } else if mib < 1024 {
                warn("disk", format!("{mib} MiB free for {}", at.display()), "free some space soon")
            } else {
                ok("disk", format!("{:.1} GiB free for {}", mib as f64 / 1024.0, at.display()))
            }
        }
        Err(e) => warn("disk", format!("cannot tell the free space of {}: {e}", at.display()), "check the mount"),
    }
}

fn database(path: &Path) -> Vec<Finding> {
    if !path.exists() {
        return vec![warn("database", format!("{} does not exist yet", path.display()), "warden start makes it")];
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let checked = rusqlite::Connection::open_with_flags(path, flags).and_then(|conn| {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))
    });
    let mut findings = vec![match checked {
        Ok(answer) if answer == "ok" => ok("database", format!("{}: integrity ok", path.display())),
        Ok(answer) => fail(
            "database",
            format!("{}: integrity check found: {answer}", path.display()),
            "stop warden and restore the database from a copy (see README, Files)",
        ),
        Err(e) => fail("database", format!("{}: {e}", path.display()), "stop warden and check the file"),
    }];
    let wal = path.with_extension("db-wal");
    let wal_mib = std::fs::metadata(&wal).map(|m| m.len() / (1 << 20)).unwrap_or(0);
    findings.push(if wal_mib > 64 {
        warn(
            "wal",
            format!("{} is {wal_mib} MiB", wal.display()),
            "it shrinks at the next checkpoint; if it keeps growing, restart warden",
        )
    } else {
        ok("wal", format!("{wal_mib} MiB"))
    });
    findings
}

/// What retention keeps, beside how big the database is.
fn retention(config: &Config, db: &Path) -> Finding {
    let settings = &config.retention;
    let mb = std::fs::metadata(db).map(|m| m.len() as f64 / (1 << 20) as f64).unwrap_or(0.0);
    if !settings.enabled {
        return warn(
            "retention",
            format!("off: output and events are kept forever (the database is {mb:.0} MiB)"),
            "set [retention] enabled = true, or run warden prune now and then",
        );
    }
    let days = settings.output_age.as_secs_f64() / 86_400.0;
    let kept = format!("output kept {days} days, the newest {} executions whole", settings.keep_last);
    match settings.max_db_bytes {
        Some(cap) if mb * (1 << 20) as f64 > cap as f64 * 1.25 => warn(
            "retention",
            format!("the database is {mb:.0} MiB, over max_db_mb = {} ({kept})", cap >> 20),
            "run warden prune (a pass runs hourly); keep_last may hold more than the cap allows",
        ),
        Some(cap) => ok("retention", format!("{kept}, at most {} MiB; the database is {mb:.0} MiB", cap >> 20)),
        None => ok("retention", format!("{kept}; the database is {mb:.0} MiB")),
    }
}

/// Each profile's program is on PATH (or is a path that exists). A ready agent profile
/// whose agent is not installed is only noted: nobody asked for it.
fn agent_binaries(config: &Config) -> Vec<Finding> {
    config
        .profiles
        .values()
        .filter_map(|profile| Some((profile.name.clone(), profile.spec.command.first()?.clone(), profile.origin)))
        .map(|(name, program, origin)| {
            if program_installed(&program) {
                ok("profile", format!("{name}: {program} found"))
            } else if origin == Origin::Builtin {
                ok("profile", format!("{name}: {program} is not installed (a ready profile, for when it is)"))
            } else {
                warn(
                    "profile",
                    format!("{name}: {program} is not on PATH"),
                    format!("install {program}, or fix profile {name}"),
                )
            }
        })
        .collect()
}
