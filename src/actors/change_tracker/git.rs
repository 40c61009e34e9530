//! Git plumbing for the ChangeTracker: find the work tree around a directory, snapshot
//! the working tree as a tree object, list and diff the files between two trees.
//!
//! A snapshot never writes anything of the user's: `git add -A` runs against a
//! temporary index in the data dir (seeded with a copy of the user's index, so unchanged
//! files are not hashed again) and writes new blobs and trees into warden's own object
//! directory, with the repository's objects as an alternate. The user's index, refs,
//! stash and object store stay byte-for-byte the same. Every git is a child process
//! (killed if its future is dropped) with the inherited `GIT_*` environment removed.
//!
//! The repository is written by agents, so nothing it configures may run: git reads no
//! system or global config, settings that start programs (fsmonitor, hooks, pagers, gc)
//! are forced off, and snapshots and diffs run with a git dir of warden's own (a
//! "shadow": HEAD, config, a copy of `info/exclude`) over the user's work tree, so the
//! repository's own config (filter drivers, textconv, an fsmonitor) is never read
//! there. Each git runs in a process group of its own, killed whole when its future is
//! dropped (a timeout).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::domain::{ChangeStatus, ChangedFile};

/// A git command that failed, with what it said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("git {op}: {detail}")]
pub struct GitError {
    pub op: &'static str,
    pub detail: String,
}

impl GitError {
    pub(super) fn new(op: &'static str, detail: impl Into<String>) -> Self {
        GitError { op, detail: detail.into() }
    }
}

/// A git work tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// The top of the work tree.
    pub root: PathBuf,
    /// The common git dir (shared between worktrees): its `info/exclude` is honoured.
    common: PathBuf,
    /// Where its objects live (`<common dir>/objects`).
    pub(super) objects: PathBuf,
    /// The user's index, copied to seed a snapshot's temporary index.
    index: PathBuf,
    /// `sha1` or `sha256`.
    object_format: String,
}

/// Where a git writes the objects it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objects {
    /// warden's own object directory (the repository's are read through it).
    Warden,
    /// The repository's object directory.
    Repository,
}

/// warden's side of git: its object directory, the temporary indexes and the shadow
/// git dirs.
#[derive(Debug, Clone)]
pub struct Git {
    pub(super) objects: PathBuf,
    pub(super) scratch: PathBuf,
    shadows: PathBuf,
    /// The user's own `core.excludesFile`, read once (global config is not read after).
    excludes_file: Option<PathBuf>,
}

/// Settings forced on every git warden runs, whatever a config file says: none of them
/// may start a program or touch the network.
const NEUTRAL: &[(&str, &str)] = &[
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.pager", "cat"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
    ("protocol.allow", "never"),
];

/// Whether `dir` or a parent holds a `.git`: a cheap check, so that directories
/// outside any repository cost no git process.
pub fn may_be_in_work_tree(dir: &Path) -> bool {
    dir.ancestors().any(|d| d.join(".git").exists())
}

impl Git {
    /// Uses `<dir>/objects`, `<dir>/index` and `<dir>/shadow`, created by the first
    /// snapshot. Reads the user's global `core.excludesFile` once (a blocking git call).
    pub fn new(dir: &Path) -> Git {
        let excludes_file = std::process::Command::new("git")
            .args(["config", "--global", "--path", "--get", "core.excludesFile"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            .filter(|path| path.is_absolute());
        Git { objects: dir.join("objects"), scratch: dir.join("index"), shadows: dir.join("shadow"), excludes_file }
    }

    /// The work tree `dir` is in, or `None` when it is in none (or inside a `.git`).
    pub async fn locate(&self, dir: &Path) -> Result<Option<Repo>, GitError> {
        if !may_be_in_work_tree(dir) {
            return Ok(None);
        }
        let mut cmd = command(dir);
        cmd.args([
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-common-dir",
            "--git-path",
            "index",
            "--show-object-format",
        ]);
        let output = output(cmd).await.map_err(|e| not_runnable("rev-parse", e))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("not a git repository") || stderr.contains("must be run in a work tree") {
                return Ok(None);
            }
            return Err(GitError::new("rev-parse", stderr.trim()));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        match (lines.next(), lines.next(), lines.next(), lines.next()) {
            (Some(root), Some(common), Some(index), Some(format)) if matches!(format, "sha1" | "sha256") => {
                Ok(Some(Repo {
                    root: root.into(),
                    common: common.into(),
                    objects: Path::new(common).join("objects"),
                    index: index.into(),
                    object_format: format.to_owned(),
                }))
            }
            _ => Err(GitError::new("rev-parse", format!("unexpected output {text:?}"))),
        }
    }

    /// The commit `HEAD` names, or `None` before the first commit.
    pub async fn head(&self, repo: &Repo) -> Result<Option<String>, GitError> {
        let mut cmd = command(&repo.root);
        cmd.args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
        let output = output(cmd).await.map_err(|e| not_runnable("rev-parse HEAD", e))?;
        Ok(output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned()))
    }

    /// The working tree as a tree id: tracked and untracked files, ignores respected.
    /// `label` starts the temporary index's name (execution and purpose; a random suffix keeps it unique).
    pub async fn snapshot(&self, repo: &Repo, label: &str) -> Result<String, GitError> {
        self.snapshot_to(repo, label, Objects::Warden).await
    }

    /// A snapshot whose objects are all written into the repository itself (an isolated
    /// execution's end, which its branch records): none of it depends on warden's store.
    pub async fn snapshot_into_repository(&self, repo: &Repo, label: &str) -> Result<String, GitError> {
        self.snapshot_to(repo, label, Objects::Repository).await
    }

    async fn snapshot_to(&self, repo: &Repo, label: &str, objects: Objects) -> Result<String, GitError> {
        for dir in [&self.objects, &self.scratch] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| GitError::new("snapshot", format!("{}: {e}", dir.display())))?;
        }
        self.prepare_shadow(repo).await?;
        // A name of its own, so no two snapshots ever share a temporary index.
        let unique = hex::encode(rand::random::<[u8; 6]>());
        let index = self.scratch.join(format!("{label}-{unique}.index"));
        let seeded = tokio::fs::copy(&repo.index, &index).await.is_ok();
        let mut added = self.add_all(repo, &index, objects).await;
        if added.is_err() && seeded {
            // An index git cannot use from elsewhere (a split index, say): start empty.
            let _ = tokio::fs::remove_file(&index).await;
            added = self.add_all(repo, &index, objects).await;
        }
        let tree = match added {
            Ok(()) => {
                let mut cmd = self.in_repo_writing(repo, objects);
                cmd.env("GIT_INDEX_FILE", &index).arg("write-tree");
                run(cmd, "write-tree").await.map(|out| String::from_utf8_lossy(&out).trim().to_owned())
            }
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_file(&index).await;
        // A snapshot killed by its deadline may leave a lock file behind.
        let _ = tokio::fs::remove_file(index.with_extension("index.lock")).await;
        let tree = tree?;
        if tree.len() < 40 || !tree.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GitError::new("write-tree", format!("unexpected output {tree:?}")));
        }
        Ok(tree)
    }

    async fn add_all(&self, repo: &Repo, index: &Path, objects: Objects) -> Result<(), GitError> {
        let mut cmd = self.in_repo_writing(repo, objects);
        cmd.env("GIT_INDEX_FILE", index).args(["add", "--all", "--ignore-errors", "--", ":/"]);
        run(cmd, "add --all").await.map(|_| ())
    }

    /// The files that differ between two trees, renames detected, in git's order.
    pub async fn changed_files(&self, repo: &Repo, from: &str, to: &str) -> Result<Vec<ChangedFile>, GitError> {
        let list = |format: &'static str| {
            let mut cmd = self.in_repo(repo);
            cmd.args(["diff-tree", "-r", "-z", "-M", "--no-ext-diff", "--no-textconv", format, from, to]);
            run(cmd, "diff-tree")
        };
        let (statuses, counts) = tokio::try_join!(list("--name-status"), list("--numstat"))?;
        merge_listing(&parse_name_status(&statuses)?, &parse_numstat(&counts)?)
    }

    /// The unified diff between two trees (of `paths` only, when given), at most
    /// `max_bytes` of it, cut at a line end. Returns the text and whether it was cut.
    pub async fn unified_diff(
        &self,
        repo: &Repo,
        from: &str,
        to: &str,
        paths: &[String],
        context: u32,
        max_bytes: usize,
    ) -> Result<(String, bool), GitError> {
        let mut cmd = self.in_repo(repo);
        cmd.args(["diff-tree", "-r", "-p", "-M", "--no-color", "--no-ext-diff", "--no-textconv"])
            .arg(format!("-U{context}"))
            .args(["--src-prefix=a/", "--dst-prefix=b/", from, to, "--"])
            .args(paths.iter().map(|p| format!(":(literal){p}")));
        let mut child = cmd.spawn().map_err(|e| not_runnable("diff-tree -p", e))?;
        let mut group = GroupKill(child.id().map(|pid| pid as i32));
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(GitError::new("diff-tree -p", "no output pipes"));
        };
        let (mut text, mut errors) = (Vec::new(), Vec::new());
        let mut limited = stdout.take(max_bytes as u64 + 1);
        let read_out = async {
            let read = limited.read_to_end(&mut text).await;
            if text.len() > max_bytes {
                // The rest is not wanted; git would block on the full pipe otherwise.
                let _ = child.start_kill();
            }
            read
        };
        let (read, _) = tokio::join!(read_out, stderr.read_to_end(&mut errors));
        read.map_err(|e| GitError::new("diff-tree -p", e.to_string()))?;
        let status = child.wait().await.map_err(|e| GitError::new("diff-tree -p", e.to_string()))?;
        group.0 = None;
        if text.len() > max_bytes {
            let cut = text[..max_bytes].iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
            text.truncate(cut);
            return Ok((String::from_utf8_lossy(&text).into_owned(), true));
        }
        if !status.success() {
            return Err(GitError::new("diff-tree -p", String::from_utf8_lossy(&errors).trim()));
        }
        Ok((String::from_utf8_lossy(&text).into_owned(), false))
    }

    /// A git over the user's work tree with warden's shadow git dir, which writes objects
    /// to warden's own directory and reads the repository's through it.
    pub(super) fn in_repo(&self, repo: &Repo) -> Command {
        let mut cmd = command(&repo.root);
        cmd.env("GIT_DIR", self.shadow(repo))
            .env("GIT_WORK_TREE", &repo.root)
            .env("GIT_OBJECT_DIRECTORY", &self.objects)
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &repo.objects);
        if let Some(file) = &self.excludes_file {
            cmd.arg("-c").arg(format!("core.excludesFile={}", file.display()));
        }
        cmd
    }

    /// `in_repo`, writing objects where `objects` says: into the repository, a git reads
    /// no object from warden's store, so every object it refers to is written there.
    pub(super) fn in_repo_writing(&self, repo: &Repo, objects: Objects) -> Command {
        let mut cmd = self.in_repo(repo);
        if objects == Objects::Repository {
            cmd.env("GIT_OBJECT_DIRECTORY", &repo.objects).env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES");
        }
        cmd
    }

    /// The shadow git dir of a work tree.
    fn shadow(&self, repo: &Repo) -> PathBuf {
        let digest = crate::credentials::token_hash(&repo.root.to_string_lossy());
        self.shadows.join(&digest[..16])
    }

    /// Makes (or refreshes) the shadow git dir: a HEAD, warden's own config (only the
    /// object format is the repository's) and the repository's `info/exclude`, whose
    /// patterns a snapshot honours. Files change by rename, so a git reading them never
    /// sees half of one.
    pub(super) async fn prepare_shadow(&self, repo: &Repo) -> Result<(), GitError> {
        let shadow = self.shadow(repo);
        let failed = |what: &Path, e: std::io::Error| GitError::new("snapshot", format!("{}: {e}", what.display()));
        for dir in [shadow.join("refs"), shadow.join("info")] {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| failed(&dir, e))?;
        }
        let (version, extension) = match repo.object_format.as_str() {
            "sha256" => ("1", "[extensions]\n\tobjectformat = sha256\n"),
            _ => ("0", ""),
        };
        let config = format!("[core]\n\trepositoryformatversion = {version}\n\tbare = false\n{extension}");
        let exclude = tokio::fs::read(repo.common.join("info/exclude")).await.unwrap_or_default();
        for (name, content) in [
            ("HEAD", b"ref: refs/heads/warden-snapshot\n".to_vec()),
            ("config", config.into_bytes()),
            ("info/exclude", exclude),
        ] {
            let path = shadow.join(name);
            if tokio::fs::read(&path).await.ok().as_deref() == Some(content.as_slice()) {
                continue;
            }
            let unique = hex::encode(rand::random::<[u8; 6]>());
            let tmp = shadow.join(format!("{name}.{unique}.tmp").replace('/', "-"));
            tokio::fs::write(&tmp, &content).await.map_err(|e| failed(&tmp, e))?;
            tokio::fs::rename(&tmp, &path).await.map_err(|e| failed(&path, e))?;
        }
        Ok(())
    }
}

/// A git in `dir` with none of the caller's `GIT_*` variables, no system or global
/// config, the [`NEUTRAL`] settings, no prompts and no optional locks (so it never
/// refreshes the user's index), in a process group of its own.
pub(super) fn command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(name);
        }
    }
    for (i, (key, value)) in NEUTRAL.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), key).env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    cmd.current_dir(dir)
        .env("GIT_CONFIG_COUNT", NEUTRAL.len().to_string())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Kills a git's whole process group unless disarmed (when the git has ended): a
/// dropped future (a timeout) leaves nothing of it running.
struct GroupKill(Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            crate::actors::execution_monitor::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Runs a git to its end and collects what it wrote.
pub(super) async fn output(mut cmd: Command) -> std::io::Result<std::process::Output> {
    let child = cmd.spawn()?;
    let mut group = GroupKill(child.id().map(|pid| pid as i32));
    let output = child.wait_with_output().await;
    group.0 = None;
    output
}

pub(super) async fn run(cmd: Command, op: &'static str) -> Result<Vec<u8>, GitError> {
    let output = output(cmd).await.map_err(|e| not_runnable(op, e))?;
    if !output.status.success() {
        return Err(GitError::new(op, String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(output.stdout)
}

fn not_runnable(op: &'static str, e: std::io::Error) -> GitError {
    if e.kind() == std::io::ErrorKind::NotFound {
        GitError::new(op, "the git program is not installed (or not on PATH)")
    } else {
        GitError::new(op, format!("cannot run git: {e}"))
    }
}

/// `(status, path, old path)` from `--name-status -z`.
fn parse_name_status(bytes: &[u8]) -> Result<Vec<(ChangeStatus, String, Option<String>)>, GitError> {
    let mut fields = bytes.split(|&b| b == 0).filter(|f| !f.is_empty()).map(|f| String::from_utf8_lossy(f));
    let mut out = Vec::new();
    while let Some(code) = fields.next() {
        let mut path = || fields.next().map(|p| p.into_owned()).ok_or_else(|| malformed("--name-status", &code));
        let entry = match code.as_bytes().first() {
            Some(b'A') => (ChangeStatus::Added, path()?, None),
            Some(b'D') => (ChangeStatus::Deleted, path()?, None),
            Some(b'M' | b'T' | b'U' | b'X') => (ChangeStatus::Modified, path()?, None),
            Some(b'R') => {
                let old = path()?;
                (ChangeStatus::Renamed, path()?, Some(old))
            }
            Some(b'C') => {
                let _source = path()?;
                (ChangeStatus::Added, path()?, None)
            }
            _ => return Err(malformed("--name-status", &code)),
        };
        out.push(entry);
    }
    Ok(out)
}

/// `(additions, deletions, binary, path)` from `--numstat -z`.
fn parse_numstat(bytes: &[u8]) -> Result<Vec<(u64, u64, bool, String)>, GitError> {
    let mut fields = bytes.split(|&b| b == 0).map(|f| String::from_utf8_lossy(f).into_owned());
    let mut out = Vec::new();
    while let Some(record) = fields.next() {
        if record.is_empty() {
            continue;
        }
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(deleted), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("--numstat", &record));
        };
        // A rename: an empty path here, then the old and the new path.
        let path = if path.is_empty() {
            let _old = fields.next();
            fields.next().ok_or_else(|| malformed("--numstat", &record))?
        } else {
            path.to_owned()
        };
        let binary = added == "-" && deleted == "-";
        let count =
            |n: &str| if binary { Ok(0) } else { n.parse::<u64>().map_err(|_| malformed("--numstat", &record)) };
        out.push((count(added)?, count(deleted)?, binary, path));
    }
    Ok(out)
}

/// Both listings come from the same diff, so they are in the same order.
fn merge_listing(
    statuses: &[(ChangeStatus, String, Option<String>)],
    counts: &[(u64, u64, bool, String)],
) -> Result<Vec<ChangedFile>, GitError> {
    if statuses.len() != counts.len() {
        return Err(GitError::new("diff-tree", "the two listings of one diff disagree"));
    }
    statuses
        .iter()
        .zip(counts)
        .map(|((status, path, old_path), (additions, deletions, binary, counted))| {
            if path != counted {
                return Err(GitError::new("diff-tree", format!("listings disagree at {path:?}")));
            }
            Ok(ChangedFile {
                path: path.clone(),
                status: *status,
                old_path: old_path.clone(),
                additions: *additions,
                deletions: *deletions,
                binary: *binary,
            })
        })
        .collect()
}

fn malformed(what: &str, near: &str) -> GitError {
    GitError::new("diff-tree", format!("cannot read {what} output near {near:?}"))
}

/// Splits a multi-file unified diff into one text per file, in order.
pub fn split_by_file(diff: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = diff.match_indices("diff --git ").map(|(i, _)| i).collect();
    starts.retain(|&i| i == 0 || diff.as_bytes()[i - 1] == b'\n');
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| &diff[start..starts.get(n + 1).copied().unwrap_or(diff.len())])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_with_renames_and_binaries_are_merged() {
        let statuses = b"M\0a.txt\0R087\0old name.txt\0new name.txt\0A\0img.png\0D\0gone\0";
        let counts = b"3\t1\ta.txt\x001\t1\t\0old name.txt\0new name.txt\0-\t-\timg.png\x000\t4\tgone\0";
        let files = merge_listing(&parse_name_status(statuses).unwrap(), &parse_numstat(counts).unwrap()).unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!((files[0].status, files[0].additions, files[0].deletions), (ChangeStatus::Modified, 3, 1));
        assert_eq!(files[1].status, ChangeStatus::Renamed);
        assert_eq!((files[1].path.as_str(), files[1].old_path.as_deref()), ("new name.txt", Some("old name.txt")));
        assert!(files[2].binary && files[2].additions == 0);
        assert_eq!((files[3].status, files[3].deletions), (ChangeStatus::Deleted, 4));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_name_status(b"Q\0x\0").is_err());
        assert!(parse_name_status(b"R100\0only-one\0").is_err());
        assert!(parse_numstat(b"x\ty\tz\0").is_err());
        assert!(parse_numstat(b"1\t2\0").is_err());
    }

    #[test]
    fn a_diff_splits_at_file_headers_only() {
        let diff = "diff --git a/x b/x\n+diff --git not a header\ndiff --git a/y b/y\n-y\n";
        let parts = split_by_file(diff);
        assert_eq!(parts, vec!["diff --git a/x b/x\n+diff --git not a header\n", "diff --git a/y b/y\n-y\n"]);
    }

    proptest::proptest! {
        /// git's listings are parsed without panicking whatever bytes come back.
        #[test]
        fn any_listing_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_name_status(&bytes);
            let _ = parse_numstat(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = split_by_file(&text);
        }
    }
}
