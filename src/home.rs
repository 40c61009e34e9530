//! The data dir and the files in it: the database, the API token, the PID lock that says
//! whether a daemon is running, `server.json` that tells clients where it listens, the
//! daemon log and `config.toml`. The daemon writes them; the CLI reads them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The data dir. Cheap to clone; creating it is explicit ([`Home::ensure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    pub fn new(dir: PathBuf) -> Self {
        Home { dir }
    }

    /// `--home` (or `$WARDEN_HOME`, which clap folds into it), else
    /// `$XDG_DATA_HOME/warden`, else `~/.local/share/warden`.
    pub fn resolve(explicit: Option<PathBuf>) -> anyhow::Result<Home> {
        if let Some(dir) = explicit {
            return Ok(Home::new(absolute(dir)?));
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home::new(absolute(PathBuf::from(xdg))?.join("warden")));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .context("neither --home, WARDEN_HOME, XDG_DATA_HOME nor HOME is set")?;
        Ok(Home::new(PathBuf::from(home).join(".local/share/warden")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("warden.db")
    }
    pub fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("warden.pid")
    }
    pub fn server_json_path(&self) -> PathBuf {
        self.dir.join("server.json")
    }
    /// warden's git objects and temporary indexes (work tree snapshots).
    pub fn git_dir(&self) -> PathBuf {
        self.dir.join("git")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("warden.log")
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }

    /// Creates the data dir (mode 0700) if it is missing. An existing one keeps its mode
    /// (`--home` may name a directory of the user's), but one that another user owns or
    /// that others may write to is refused: whoever can write there could plant a
    /// `config.toml` or swap the database.
    pub fn ensure(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .with_context(|| format!("creating data dir {}", self.dir.display()))?;
        }
        let meta = std::fs::metadata(&self.dir).with_context(|| format!("reading data dir {}", self.dir.display()))?;
        if !meta.is_dir() {
            bail!("the data dir {} is not a directory", self.dir.display());
        }
        // SAFETY: geteuid cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            bail!(
                "the data dir {} belongs to user {}, not to you (user {me}): use a data dir of your own",
                self.dir.display(),
                meta.uid()
            );
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            bail!(
                "the data dir {} may be written by others (mode {mode:03o}), who could then plant a config or \
                 replace the database: run `chmod go-w {}` or choose another --home",
                self.dir.display(),
                self.dir.display()
            );
        }
        Ok(())
    }

    /// The API token: read from `token`, or made on first start (256 random bits, hex,
    /// mode 0600).
    pub fn load_or_create_token(&self) -> anyhow::Result<String> {
        let path = self.token_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim().to_owned();
                if token.len() < 32 {
                    bail!("{} holds no valid token; delete it to make a new one", path.display());
                }
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
                Ok(token)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let token = hex::encode(bytes);
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
                Ok(token)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Reads the token without creating one (the CLI's view).
    pub fn read_token(&self) -> anyhow::Result<String> {
        let path = self.token_path();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("reading the API token from {} (has the daemon ever started here?)", path.display())
        })?;
        Ok(text.trim().to_owned())
    }

    /// Takes the PID lock for this process, or says which daemon holds it. The lock is an
    /// `flock` held as long as the returned value lives, so a PID file left by a crash
    /// (or naming a process that is not warden) is never mistaken for a running daemon.
    pub fn lock_pid(&self) -> anyhow::Result<PidLock> {
        let path = self.pid_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let pid = read_pid(&mut file).map(|p| format!(" (pid {p})")).unwrap_or_default();
                bail!("a warden daemon is already running for {}{pid}", self.dir.display());
            }
        };
        lock.set_len(0).with_context(|| format!("truncating {}", path.display()))?;
        write!(*lock, "{}", std::process::id()).with_context(|| format!("writing {}", path.display()))?;
        lock.sync_all().ok();
        Ok(PidLock { _lock: lock, path })
    }

    /// The pid of the daemon running for this home, if one holds the PID lock. A stale
    /// PID file (its process gone, or not warden) is removed.
    pub fn running_pid(&self) -> Option<u32> {
        let path = self.pid_path();
        let file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                // Nobody holds it: whatever the file says is stale.
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(self.server_json_path());
                drop(lock);
                None
            }
            Err((mut file, _)) => read_pid(&mut file),
        }
    }

    pub fn write_server_info(&self, info: &ServerInfo) -> anyhow::Result<()> {
        let path = self.server_json_path();
        let tmp = self.dir.join("server.json.tmp");
        let text = serde_json::to_vec_pretty(info).context("encoding server.json")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read_server_info(&self) -> anyhow::Result<ServerInfo> {
        let path = self.server_json_path();
        let text = std::fs::read(&path)
            .with_context(|| format!("reading {} (is the daemon running? try `warden start`)", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn remove_server_info(&self) {
        let _ = std::fs::remove_file(self.server_json_path());
    }
}

fn absolute(dir: PathBuf) -> anyhow::Result<PathBuf> {
    if dir.is_absolute() {
        Ok(dir)
    } else {
        Ok(std::env::current_dir().context("reading the current directory")?.join(dir))
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Held by the running daemon; removes the PID file when dropped (clean exit).
pub struct PidLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `server.json`: where a running daemon listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    pub host: String,
    pub port: u16,
    pub url: String,
    pub started_at: DateTime<Utc>,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        home.ensure().unwrap();
        let first = home.load_or_create_token().unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(home.load_or_create_token().unwrap(), first);
        let mode = std::fs::metadata(home.token_path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(home.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn an_existing_data_dir_keeps_its_mode_and_one_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let shared = dir.path().join("mine");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
        Home::new(shared.clone()).ensure().expect("a directory only its owner writes is fine");
        assert_eq!(mode(&shared), 0o750, "an existing data dir keeps its mode");

        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = Home::new(open.clone()).ensure().unwrap_err().to_string();
        assert!(refused.contains("may be written by others") && refused.contains("chmod go-w"), "{refused}");
        assert_eq!(mode(&open), 0o777, "nothing is changed when it is refused");
        assert!(!open.join("token").exists());
    }

    #[test]
    fn pid_lock_is_exclusive_and_stale_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().into());
        std::fs::write(home.pid_path(), "1\n").unwrap(); // stale: nobody holds the lock
        assert_eq!(home.running_pid(), None);
        let lock = home.lock_pid().unwrap();
        assert_eq!(home.running_pid(), Some(std::process::id()));
        let err = home.lock_pid().err().unwrap().to_string();
        assert!(err.contains("already running"), "{err}");
        drop(lock);
        assert!(!home.pid_path().exists());
        assert_eq!(home.running_pid(), None);
    }
}
