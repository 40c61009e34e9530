//! Git plumbing for the ChangeTracker: find the work tree around a directory, snapshot
//! the working tree as a tree object, list and diff the files between two trees.
//!
//! A snapshot never writes anything of the user's: `git add -A` runs against a
//! temporary index in the data dir (seeded with a copy of the user's index, so unchanged
//! files are not hashed again) and writes new blobs and trees into warden's own object
//! directory, with the repository's objects as an alternate. The user's index, refs,
//! stash and object store stay byte-for-byte the same. Every git is a child process
//! (killed if its future is dropped) with the inherited `GIT_*` environment removed.

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
    fn new(op: &'static str, detail: impl Into<String>) -> Self {
        GitError { op, detail: detail.into() }
    }
}

/// A git work tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// The top of the work tree.
    pub root: PathBuf,
    /// Where its objects live (`<common dir>/objects`; shared between worktrees).
    objects: PathBuf,
    /// The user's index, copied to seed a snapshot's temporary index.
    index: PathBuf,
}

/// warden's side of git: its object directory and the temporary indexes.
#[derive(Debug, Clone)]
pub struct Git {
    objects: PathBuf,
    scratch: PathBuf,
}

/// Whether `dir` or a parent holds a `.git`: a cheap check, so that directories
/// outside any repository cost no git process.
pub fn may_be_in_work_tree(dir: &Path) -> bool {
    dir.ancestors().any(|d| d.join(".git").exists())
}

impl Git {
    /// Uses `<dir>/objects` and `<dir>/index`, created by the first snapshot.
    pub fn new(dir: &Path) -> Git {
        Git { objects: dir.join("objects"), scratch: dir.join("index") }
    }

    /// The work tree `dir` is in, or `None` when it is in none (or inside a `.git`).
    pub async fn locate(&self, dir: &Path) -> Result<Option<Repo>, GitError> {
        if !may_be_in_work_tree(dir) {
            return Ok(None);
        }
        let mut cmd = command(dir);
        cmd.args(["rev-parse", "--path-format=absolute", "--show-toplevel", "--git-common-dir", "--git-path", "index"]);
        let output = cmd.output().await.map_err(|e| not_runnable("rev-parse", e))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("not a git repository") || stderr.contains("must be run in a work tree") {
                return Ok(None);
            }
            return Err(GitError::new("rev-parse", stderr.trim()));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        match (lines.next(), lines.next(), lines.next()) {
            (Some(root), Some(common), Some(index)) => {
                Ok(Some(Repo { root: root.into(), objects: Path::new(common).join("objects"), index: index.into() }))
            }
            _ => Err(GitError::new("rev-parse", format!("unexpected output {text:?}"))),
        }
    }

    /// The commit `HEAD` names, or `None` before the first commit.
    pub async fn head(&self, repo: &Repo) -> Result<Option<String>, GitError> {
        let mut cmd = command(&repo.root);
        cmd.args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
        let output = cmd.output().await.map_err(|e| not_runnable("rev-parse HEAD", e))?;
        Ok(output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned()))
    }

    /// The working tree as a tree id: tracked and untracked files, ignores respected.
    /// `label` starts the temporary index's name (execution and purpose; a random suffix keeps it unique).
    pub async fn snapshot(&self, repo: &Repo, label: &str) -> Result<String, GitError> {
        for dir in [&self.objects, &self.scratch] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| GitError::new("snapshot", format!("{}: {e}", dir.display())))?;
        }
        // A name of its own, so no two snapshots ever share a temporary index.
        let unique = hex::encode(rand::random::<[u8; 6]>());
        let index = self.scratch.join(format!("{label}-{unique}.index"));
        let seeded = tokio::fs::copy(&repo.index, &index).await.is_ok();
        let mut added = self.add_all(repo, &index).await;
        if added.is_err() && seeded {
            // An index git cannot use from elsewhere (a split index, say): start empty.
            let _ = tokio::fs::remove_file(&index).await;
            added = self.add_all(repo, &index).await;
        }
        let tree = match added {
            Ok(()) => {
                let mut cmd = self.in_repo(repo);
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

    async fn add_all(&self, repo: &Repo, index: &Path) -> Result<(), GitError> {
        let mut cmd = self.in_repo(repo);
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

    /// A git in the work tree that writes objects to warden's own directory and reads
    /// the repository's through it.
    fn in_repo(&self, repo: &Repo) -> Command {
        let mut cmd = command(&repo.root);
        cmd.env("GIT_OBJECT_DIRECTORY", &self.objects).env("GIT_ALTERNATE_OBJECT_DIRECTORIES", &repo.objects);
        cmd
    }
}

/// A git in `dir` with none of the caller's `GIT_*` variables, no prompts and no
/// optional locks (so it never refreshes the user's index).
fn command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command, op: &'static str) -> Result<Vec<u8>, GitError> {
    let output = cmd.output().await.map_err(|e| not_runnable(op, e))?;
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
