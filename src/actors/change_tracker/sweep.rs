//! The ChangeTracker's part of retention: after a prune pass, the snapshot objects in
//! warden's own object directory that no kept execution needs are deleted, and the
//! worktrees whose executions were all pruned are removed (their work recorded on their
//! branch first, which stays). The Retention actor asks (`SweepSnapshots`); a dry run
//! only counts.
//!
//! What a kept execution needs is found by walking its start and end trees in warden's
//! object directory alone (`rev-list --objects --missing=allow-any`): whatever of them is
//! not there is the repository's, and so is everything under it. A snapshot being taken
//! meanwhile writes (or freshens, for one already there) every object of warden's it will
//! refer to, so objects younger than [`GRACE`] are never deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use actix::prelude::*;

use super::git::{command, run, Git, GitError};
use super::{cleanup, ChangeTracker};
use crate::domain::ExecutionId;
use crate::store::{executions as rows, retention};

/// Objects younger than this are kept: a snapshot in progress may refer to them.
pub const GRACE: Duration = Duration::from_secs(3600);

/// Delete (or, for a dry run, count) the snapshot objects and worktrees that only pruned
/// executions (and those in `also_pruned`) need.
#[derive(Message, Debug, Default)]
#[rtype(result = "Result<Swept, String>")]
pub struct SweepSnapshots {
    pub also_pruned: HashSet<ExecutionId>,
    pub dry_run: bool,
}

/// What a sweep freed (would free).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub objects: u64,
    pub bytes: u64,
    pub worktrees: u64,
}

/// Remove the worktree of an execution being deleted (its work recorded on its branch
/// first), unless another execution still works in it.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, String>")]
pub struct RetireWorktree {
    pub id: ExecutionId,
    pub cwd: PathBuf,
    pub worktree: PathBuf,
    pub branch: String,
}

impl Handler<SweepSnapshots> for ChangeTracker {
    type Result = ResponseFuture<Result<Swept, String>>;

    fn handle(&mut self, msg: SweepSnapshots, _: &mut Self::Context) -> Self::Result {
        let (git, store, timeout) = (self.git.clone(), self.store.clone(), self.settings.snapshot_timeout);
        Box::pin(async move {
            let also = msg.also_pruned.clone();
            let (trees, worktrees) = store
                .read("list what kept executions need", move |c| {
                    Ok((retention::kept_trees(c, &also)?, rows::worktrees_of_pruned(c, &also)?))
                })
                .await
                .map_err(|e| e.to_string())?;
            let (objects, bytes) = sweep_objects(&git, &trees, msg.dry_run).await.map_err(|e| e.to_string())?;
            let mut removed = 0;
            for worktree in worktrees {
                if msg.dry_run {
                    removed += 1;
                    continue;
                }
                let path = PathBuf::from(&worktree.worktree);
                let gone = !path.is_dir();
                let done = tokio::time::timeout(
                    timeout,
                    cleanup::remove(&git, Path::new(&worktree.cwd), &path, &worktree.branch, gone),
                )
                .await;
                match done {
                    Ok(Ok(())) => {
                        let dir = worktree.worktree.clone();
                        let forgotten =
                            store.record("forget a pruned worktree", move |c, _| rows::forget_worktree(c, &dir)).await;
                        if forgotten.is_ok() {
                            removed += 1;
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(worktree = %path.display(), error = %e, "a pruned worktree was not removed")
                    }
                    Err(_) => tracing::warn!(worktree = %path.display(), "removing a pruned worktree took too long"),
                }
            }
            Ok(Swept { objects, bytes, worktrees: removed })
        })
    }
}

impl Handler<RetireWorktree> for ChangeTracker {
    type Result = ResponseFuture<Result<bool, String>>;

    fn handle(&mut self, msg: RetireWorktree, _: &mut Self::Context) -> Self::Result {
        let (git, store, timeout) = (self.git.clone(), self.store.clone(), self.settings.snapshot_timeout);
        Box::pin(async move {
            let dir = msg.worktree.display().to_string();
            let (id, shared) = (msg.id, dir.clone());
            let others = store
                .read("who else works in the worktree", move |c| rows::others_in_worktree(c, &shared, id))
                .await
                .map_err(|e| e.to_string())?;
            if others > 0 {
                return Ok(false);
            }
            let gone = !msg.worktree.is_dir();
            tokio::time::timeout(timeout, cleanup::remove(&git, &msg.cwd, &msg.worktree, &msg.branch, gone))
                .await
                .map_err(|_| "removing the worktree took too long".to_owned())?
                .map_err(|e| e.to_string())?;
            Ok(true)
        })
    }
}

/// Deletes (or counts) the loose objects of warden's own directory that none of
/// `trees` reaches and that are older than [`GRACE`]: how many, and their bytes.
async fn sweep_objects(git: &Git, trees: &[String], dry_run: bool) -> Result<(u64, u64), GitError> {
    let objects = git.objects.clone();
    if !objects.is_dir() {
        return Ok((0, 0));
    }
    let started = SystemTime::now();
    let reachable = reachable(git, trees).await?;
    let sweep = move || {
        let mut found = (0u64, 0u64);
        let Ok(fanout) = std::fs::read_dir(&objects) else { return found };
        for dir in fanout.flatten() {
            let prefix = dir.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path()) else { continue };
            for file in files.flatten() {
                let id = format!("{prefix}{}", file.file_name().to_string_lossy());
                if reachable.contains(&id) {
                    continue;
                }
                let Ok(meta) = file.metadata() else { continue };
                let old =
                    meta.modified().ok().and_then(|m| started.duration_since(m).ok()).is_some_and(|age| age >= GRACE);
                if !old || !meta.is_file() {
                    continue;
                }
                if dry_run || std::fs::remove_file(file.path()).is_ok() {
                    found.0 += 1;
                    found.1 += meta.len();
                }
            }
            if !dry_run {
                // Only goes when empty.
                let _ = std::fs::remove_dir(dir.path());
            }
        }
        found
    };
    tokio::task::spawn_blocking(sweep).await.map_err(|e| GitError::new("sweep", e.to_string()))
}

/// The ids of the objects in warden's directory that `trees` reach.
async fn reachable(git: &Git, trees: &[String]) -> Result<HashSet<String>, GitError> {
    if trees.is_empty() {
        return Ok(HashSet::new());
    }
    let base = git.objects.parent().unwrap_or(&git.objects).to_path_buf();
    let sweep_dir = base.join("sweep.git");
    if !sweep_dir.join("HEAD").exists() {
        let mut init = command(&base);
        init.args(["init", "--quiet", "--bare"]).arg(&sweep_dir);
        run(init, "init").await?;
    }
    let list = base.join(format!("sweep-{}.list", hex::encode(rand::random::<[u8; 6]>())));
    let mut text = trees.join("\n");
    text.push('\n');
    tokio::fs::write(&list, text).await.map_err(|e| GitError::new("sweep", format!("{}: {e}", list.display())))?;
    let input = std::fs::File::open(&list).map_err(|e| GitError::new("sweep", e.to_string()));
    let _ = std::fs::remove_file(&list);
    let mut cmd = command(&sweep_dir);
    cmd.env("GIT_DIR", &sweep_dir)
        .env("GIT_OBJECT_DIRECTORY", &git.objects)
        .args(["rev-list", "--objects", "--no-object-names", "--missing=allow-any", "--stdin"])
        .stdin(input?);
    let out = run(cmd, "rev-list --objects").await?;
    Ok(String::from_utf8_lossy(&out).lines().map(|line| line.trim().to_owned()).filter(|l| !l.is_empty()).collect())
}
