//! The ChangeTracker's clean-up of worktrees: at start and then periodically, the
//! worktree of a final isolated execution (a session's, once all its turns are final)
//! that ended more than `[worktrees] keep_days` ago is removed, its work first recorded
//! on its branch, which stays until merged or discarded; a worktree whose directory the
//! user deleted has its entry pruned from the repository. Rows say so (`worktree` null).
//! Git runs off the actor's thread; one pass at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use super::{seal_message_for, ChangeTracker};
use crate::store::executions as rows;

/// Run a clean-up pass (unless one is running).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CleanWorktrees;

/// How often the pass runs: often enough that a worktree outlives `keep` by at most a
/// quarter of it, at most hourly, at least every second.
pub(super) fn period(keep: Duration) -> Duration {
    (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

impl Handler<CleanWorktrees> for ChangeTracker {
    type Result = ();

    fn handle(&mut self, _: CleanWorktrees, ctx: &mut Self::Context) {
        if self.cleaning || self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.cleaning = true;
        let (git, store, keep) = (self.git.clone(), self.store.clone(), self.settings.keep_worktrees);
        let timeout = self.settings.snapshot_timeout;
        let pass = async move {
            let worktrees = match store.read("list worktrees", rows::worktrees_of_final).await {
                Ok(worktrees) => worktrees,
                Err(e) => return tracing::warn!(error = %e, "the worktree clean-up could not list worktrees"),
            };
            for rows::EndedWorktree { worktree, cwd, branch, ended } in worktrees {
                let path = PathBuf::from(&worktree);
                let gone = !path.is_dir();
                let old = (Utc::now() - ended).to_std().is_ok_and(|age| age >= keep);
                if !gone && !old {
                    continue;
                }
                let removed = tokio::time::timeout(timeout, remove(&git, Path::new(&cwd), &path, &branch, gone)).await;
                match removed {
                    Ok(Ok(())) => {
                        let forgotten = store
                            .record("forget a removed worktree", move |c, _| rows::forget_worktree(c, &worktree))
                            .await;
                        match forgotten {
                            Ok(_) => {
                                tracing::info!(worktree = %path.display(), deleted_by_user = gone, "worktree removed; its branch stays")
                            }
                            Err(e) => {
                                tracing::warn!(worktree = %path.display(), error = %e, "a removed worktree is still recorded")
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(worktree = %path.display(), error = %e, "an old worktree was not removed")
                    }
                    Err(_) => tracing::warn!(worktree = %path.display(), "removing an old worktree took too long"),
                }
            }
        };
        ctx.spawn(pass.into_actor(self).map(|_, act, _| act.cleaning = false));
    }
}

/// Removes one worktree, its work (if its directory is still there) recorded on its
/// branch first, so nothing of it is lost.
pub(super) async fn remove(
    git: &super::git::Git,
    cwd: &Path,
    worktree: &Path,
    branch: &str,
    gone: bool,
) -> Result<(), super::git::GitError> {
    let repo = git.locate(cwd).await?.ok_or_else(|| {
        super::git::GitError::new("clean-up", format!("{} is no longer in a git work tree", cwd.display()))
    })?;
    if !gone {
        let inside = git.locate(worktree).await?.ok_or_else(|| {
            super::git::GitError::new("clean-up", format!("{} is not a worktree", worktree.display()))
        })?;
        let tree = git.snapshot_into_repository(&inside, "keep").await?;
        git.seal(&repo, branch, &tree, None, &seal_message_for(branch)).await?;
    }
    git.remove_worktree_dir(&repo, if gone { Path::new("") } else { worktree }).await
}
