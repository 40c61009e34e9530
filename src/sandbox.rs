//! Confining agent processes with Landlock: what a sandboxed execution's processes may
//! read and write, and spawning a process inside that confinement. The
//! ExecutionMonitor's `process` module is the only caller; `warden status` asks
//! [`kernel_abi`] whether the kernel can confine at all.
//!
//! Landlock only allows (it has no deny rule), so "everything but the data dir" is built
//! from its complement: every entry of every directory on the path from `/` down to the
//! data dir gets the rights, except the next step on that path. The directories on the
//! path themselves get no rights beyond listing, so under them nothing new can be
//! created, renamed or removed (writing the files already there is fine). Symlinks are
//! never followed when rules are made: a rule lands on the inode that was looked at.
//!
//! A Landlock domain is a property of a thread's credentials and passes to every process
//! the thread starts, and to theirs. So a thread of its own restricts itself and spawns
//! the agent with `posix_spawn` as before, then ends; no code runs between fork and exec,
//! the daemon's other threads stay unrestricted, and each execution gets a domain of its
//! own (so one agent cannot signal another's processes). That thread is started ahead,
//! while nothing waits. Rule sets are kept and reused while the directories they were
//! made from are unchanged (their mtimes), so a spawn usually costs a few `stat`s, one
//! `dup`, one thread and one `landlock_restrict_self`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use landlock::{
    Access, AccessFs, BitFlags, PathBeneath, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};

use crate::domain::Word;
use crate::domain::{SandboxApplied, SandboxMode};

/// The Landlock ABI whose file system rights and scopes warden handles (vetted: file
/// rights up to device ioctls, and the signal scope). Newer kernels enforce this set;
/// older ones enforce what they know (best effort).
const ABI_USED: ABI = ABI::V6;

/// Files and directories under `$HOME` that agents keep their own state in, writable
/// under `workspace-write`.
const AGENT_STATE: &[&str] =
    &[".cache", ".claude", ".claude.json", ".codex", ".gemini", ".npm", ".local/state", ".config/claude"];

/// Writable under `workspace-write` besides the work tree and the agent's state.
const SCRATCH: &[&str] = &["/tmp", "/var/tmp", "/dev"];

/// The Landlock ABI the running kernel offers, or `None` without Landlock.
pub fn kernel_abi() -> Option<i32> {
    // SAFETY: with a null attribute and the VERSION flag the call only returns a number.
    let version =
        unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<libc::c_void>(), 0usize, 1u32) };
    (version > 0).then_some(version as i32)
}

/// Builds and keeps the rule sets for one data dir. Cheap to clone.
#[derive(Clone)]
pub struct Sandboxer {
    inner: Arc<SandboxerInner>,
}

struct SandboxerInner {
    /// The data dir, canonical: what no confined process may touch.
    protected: PathBuf,
    /// `$HOME`, for the agents' own state under `workspace-write`.
    home: Option<PathBuf>,
    /// Rule sets by what they confine, with what they were made from.
    cache: Mutex<HashMap<Key, Cached>>,
    /// Said once in the log when the kernel cannot confine.
    told_unavailable: AtomicBool,
    /// A fresh thread waiting to confine the next spawn, made after the last one was
    /// handed over (`prepare_next`), so that no spawn waits for a thread to start.
    spare: Mutex<Option<Spare>>,
}

/// Work for a spare thread: restrict itself, spawn, answer.
type Job = Box<dyn FnOnce() + Send>;

/// A thread waiting for its one job.
struct Spare(std::sync::mpsc::SyncSender<Job>);

impl Spare {
    fn start() -> std::io::Result<Spare> {
        let (jobs, job) = std::sync::mpsc::sync_channel::<Job>(1);
        std::thread::Builder::new().name("warden-sandbox".into()).stack_size(64 * 1024).spawn(move || {
            // Its restriction is for this one spawn; then the thread ends.
            if let Ok(job) = job.recv() {
                job();
            }
        })?;
        Ok(Spare(jobs))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    mode: SandboxMode,
    /// The work tree, for `workspace-write` (empty for `protect-data`).
    work_tree: PathBuf,
    /// `$TMPDIR` of the process, writable under `workspace-write`.
    tmpdir: Option<PathBuf>,
}

struct Cached {
    ruleset: RulesetCreated,
    made_from: Vec<Observed>,
}

/// What one path looked like when a rule set was made from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    path: PathBuf,
    state: Option<SystemTime>,
}

impl Observed {
    fn now(path: &Path) -> Observed {
        Observed { path: path.to_owned(), state: std::fs::symlink_metadata(path).and_then(|m| m.modified()).ok() }
    }

    fn unchanged(&self) -> bool {
        Observed::now(&self.path) == *self
    }
}

/// How one process is to be confined.
pub struct Confinement {
    pub sandboxer: Sandboxer,
    pub mode: SandboxMode,
    /// Where the process runs.
    pub cwd: PathBuf,
    /// The process's `$TMPDIR`, if it has one.
    pub tmpdir: Option<PathBuf>,
}

impl Sandboxer {
    /// Confines processes away from `data_dir` (which must exist).
    pub fn new(data_dir: &Path) -> std::io::Result<Sandboxer> {
        let protected = std::fs::canonicalize(data_dir)?;
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        Ok(Sandboxer {
            inner: Arc::new(SandboxerInner {
                protected,
                home,
                cache: Mutex::new(HashMap::new()),
                told_unavailable: AtomicBool::new(false),
                spare: Mutex::new(None),
            }),
        })
    }

    /// The protected directory.
    pub fn protected(&self) -> &Path {
        &self.inner.protected
    }

    /// A rule set for `key`: the kept one while what it was made from is unchanged, else
    /// a new one.
    fn ruleset(&self, key: Key) -> Result<RulesetCreated, String> {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = cache.get(&key) {
            if cached.made_from.iter().all(Observed::unchanged) {
                return cached.ruleset.try_clone().map_err(|e| format!("duplicating a rule set: {e}"));
            }
        }
        let (ruleset, made_from) = self.build(&key)?;
        tracing::debug!(mode = key.mode.as_str(), rules_from = made_from.len(), "sandbox rules made");
        let copy = ruleset.try_clone().map_err(|e| format!("duplicating a rule set: {e}"))?;
        // One entry per work tree in use; an old daemon does not collect them forever.
        if cache.len() >= 256 {
            cache.clear();
        }
        cache.insert(key, Cached { ruleset, made_from });
        Ok(copy)
    }

    fn build(&self, key: &Key) -> Result<(RulesetCreated, Vec<Observed>), String> {
        let all = AccessFs::from_all(ABI_USED);
        let read = AccessFs::from_read(ABI_USED);
        let failed = |e: landlock::RulesetError| format!("making the sandbox's rules: {e}");
        let mut rules = Rules { grants: Vec::new(), made_from: Vec::new(), protected: &self.inner.protected };
        // Listing any directory (names only) keeps `ls` of the directories above the
        // data dir working; no file is read or written through this right.
        rules.add(Path::new("/"), AccessFs::ReadDir.into())?;
        match key.mode {
            SandboxMode::ProtectData => rules.grant_except_protected(Path::new("/"), all)?,
            SandboxMode::WorkspaceWrite => {
                rules.grant_except_protected(Path::new("/"), read)?;
                let home = self.inner.home.iter().flat_map(|h| AGENT_STATE.iter().map(move |p| h.join(p)));
                let writable = std::iter::once(key.work_tree.clone())
                    .chain(linked_git_dirs(&key.work_tree))
                    .chain(SCRATCH.iter().map(PathBuf::from))
                    .chain(key.tmpdir.clone())
                    .chain(home);
                for root in writable {
                    // Watched even while missing: an agent's state dir made later counts.
                    rules.made_from.push(Observed::now(&root));
                    if root.exists() {
                        rules.grant_except_protected(&root, all)?;
                    }
                }
            }
            SandboxMode::Off => return Err("an unsandboxed execution has no rule set".into()),
        }
        let ruleset = Ruleset::default()
            .handle_access(all)
            .and_then(|r| r.scope(Scope::Signal))
            .and_then(|r| r.create())
            .and_then(|r| r.add_rules(rules.grants.into_iter().map(Ok::<_, landlock::RulesetError>)))
            .map_err(failed)?;
        Ok((ruleset, rules.made_from))
    }

    /// Runs `job` on a thread of its own that is first confined as `confinement` says
    /// (`job` is told what was applied, or why it could not be), and that ends after
    /// it: `job` spawns the agent, which inherits the confinement. Returns at once; the
    /// rule set is looked up (or made) on that thread, not the caller's.
    pub fn run_confined(
        confinement: Confinement,
        job: impl FnOnce(std::io::Result<SandboxApplied>) + Send + 'static,
    ) -> std::io::Result<()> {
        let spare = confinement.sandboxer.inner.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let spare = match spare {
            Some(spare) => spare,
            None => Spare::start()?,
        };
        let work: Job = Box::new(move || job(confinement.restrict_this_thread()));
        spare.0.send(work).map_err(|_| std::io::Error::other("the sandbox thread ended before its job"))
    }

    /// Starts the thread the next confined spawn will use, unless one waits already.
    /// Call from a thread that is not confined (it passes its confinement on).
    pub fn prepare_next(&self) {
        let mut spare = self.inner.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if spare.is_none() {
            *spare = Spare::start().ok();
        }
    }
}

impl Confinement {
    /// Confines the calling thread (and what it starts from now on) for good.
    fn restrict_this_thread(&self) -> std::io::Result<SandboxApplied> {
        let sandboxer = &self.sandboxer;
        let key = Key {
            mode: self.mode,
            work_tree: match self.mode {
                SandboxMode::WorkspaceWrite => work_tree(&self.cwd),
                _ => PathBuf::new(),
            },
            tmpdir: match self.mode {
                SandboxMode::WorkspaceWrite => self.tmpdir.clone(),
                _ => None,
            },
        };
        let ruleset = sandboxer.ruleset(key).map_err(std::io::Error::other)?;
        let status = ruleset.restrict_self().map_err(std::io::Error::other)?;
        Ok(match status.ruleset {
            RulesetStatus::NotEnforced => {
                if !sandboxer.inner.told_unavailable.swap(true, Ordering::Relaxed) {
                    tracing::warn!("this kernel has no Landlock: executions run unsandboxed (sandbox: unavailable)");
                }
                SandboxApplied::Unavailable
            }
            RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => self.mode.into(),
        })
    }
}

/// The git work tree `cwd` is in (its top), or `cwd` itself outside one.
/// For a linked worktree (an isolated execution's, whose `.git` is a file naming its git
/// dir under the repository's `worktrees/`): that git dir and the repository's objects,
/// refs and logs, so that `git commit` works there as it does in a work tree whose `.git`
/// is inside it; never the repository's config or hooks.
fn linked_git_dirs(work_tree: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(work_tree.join(".git")) else { return Vec::new() };
    let Some(git_dir) = text.strip_prefix("gitdir: ").map(|d| work_tree.join(d.trim_end())) else {
        return Vec::new();
    };
    let Some(common) = git_dir.parent().filter(|p| p.ends_with("worktrees")).and_then(Path::parent) else {
        return Vec::new();
    };
    let mut dirs = vec![git_dir.clone()];
    dirs.extend(["objects", "refs", "logs"].map(|d| common.join(d)));
    dirs
}

fn work_tree(cwd: &Path) -> PathBuf {
    cwd.ancestors().find(|dir| dir.join(".git").exists()).unwrap_or(cwd).to_owned()
}

/// The rules of a rule set being made.
struct Rules<'a> {
    grants: Vec<PathBeneath<OwnedFd>>,
    made_from: Vec<Observed>,
    protected: &'a Path,
}

impl Rules<'_> {
    /// Grants `access` on `root` and everything under it, except the protected
    /// directory: when that lies under `root`, each directory on the way down to it gives
    /// the rights to all of its entries but the next step.
    fn grant_except_protected(&mut self, root: &Path, access: BitFlags<AccessFs>) -> Result<(), String> {
        if root.starts_with(self.protected) {
            return Ok(());
        }
        let Ok(below) = self.protected.strip_prefix(root) else {
            return self.add(root, access);
        };
        let mut dir = root.to_owned();
        for step in below.components() {
            self.made_from.push(Observed::now(&dir));
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                if entry.file_name().as_os_str() != step.as_os_str() {
                    self.add(&entry.path(), access)?;
                }
            }
            dir.push(step);
        }
        Ok(())
    }

    /// One rule on the inode at `path` itself (a symlink is skipped, never followed; a
    /// path that vanished is skipped).
    fn add(&mut self, path: &Path, access: BitFlags<AccessFs>) -> Result<(), String> {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path);
        let fd: OwnedFd = match opened {
            Ok(file) => file.into(),
            Err(_) => return Ok(()),
        };
        use nix::sys::stat::{fstat, SFlag};
        let Ok(stat) = fstat(&fd) else { return Ok(()) };
        let access = match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => return Ok(()),
            SFlag::S_IFDIR => access,
            _ => access & AccessFs::from_file(ABI_USED),
        };
        if access.is_empty() {
            return Ok(());
        }
        self.grants.push(PathBeneath::new(fd, access));
        Ok(())
    }
}
