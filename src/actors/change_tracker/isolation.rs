//! The ChangeTracker's worktree messages: make an isolated execution's worktree (the
//! ExecutionMonitor asks when the execution's slot is granted and its start snapshot
//! taken) and remove one (a discard, or a worktree made for an execution cancelled
//! meanwhile). Git runs in child processes, never on the actor's thread, within the
//! snapshot timeout.

use std::path::{Path, PathBuf};

use actix::prelude::*;

use super::branch::{MergePlan, Merged};
use super::git::GitError;
use super::worktree::{Applied, Base};
use super::{too_slow, ChangeTracker, ChangesError};
use crate::domain::{AppliedWork, Execution, ExecutionId, MergeRequest, MergedWork, NewEvent};
use crate::store::executions as rows;

/// Make the worktree of an isolated execution, on its own branch, from `base_ref` (or,
/// without one, from the user's work tree as `start_tree` recorded it).
#[derive(Message, Debug)]
#[rtype(result = "Result<Isolated, String>")]
pub struct PrepareWorktree {
    pub id: ExecutionId,
    /// The directory the execution was asked to run in (in the user's work tree).
    pub cwd: PathBuf,
    /// Words for the branch name.
    pub prompt: String,
    pub base_ref: Option<String>,
    /// The start snapshot's tree, when one was taken.
    pub start_tree: Option<String>,
}

/// A made worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolated {
    /// The worktree's top.
    pub worktree: PathBuf,
    pub branch: String,
    pub base_commit: String,
    pub base_tree: String,
    /// The branch the base came from.
    pub base_branch: Option<String>,
    /// Where the agent runs: the same place below the top as `cwd` in the user's tree.
    pub work_dir: PathBuf,
}

/// Discard a final isolated execution's work: its worktree and branch are removed, its
/// row says so and `execution.discarded` is sent. Replies with the execution as it is
/// now.
#[derive(Message, Debug)]
#[rtype(result = "Result<Execution, ChangesError>")]
pub struct Discard {
    pub execution: Execution,
}

/// Apply a final isolated execution's work onto the user's work tree, 3-way, as
/// uncommitted changes; only when every file merges cleanly (else `Conflict`, nothing
/// changed). Sends `execution.applied`.
#[derive(Message, Debug)]
#[rtype(result = "Result<AppliedWork, ChangesError>")]
pub struct Apply {
    pub execution: Execution,
}

/// Merge a final isolated execution's work into a branch of the user's, as a commit,
/// without checking anything out; then its worktree and branch are removed and
/// `execution.merged` is sent. Conflicts, or an uncommitted change in the way where the
/// branch is checked out, change nothing.
#[derive(Message, Debug)]
#[rtype(result = "Result<MergedWork, ChangesError>")]
pub struct Merge {
    pub execution: Execution,
    pub request: MergeRequest,
}

/// Remove an execution's worktree and its branch (what is gone already is fine).
#[derive(Message, Debug)]
#[rtype(result = "Result<(), String>")]
pub struct RemoveWorktree {
    /// A directory of the user's repository (the execution's `cwd`).
    pub cwd: PathBuf,
    pub worktree: PathBuf,
    pub branch: String,
}

impl Handler<PrepareWorktree> for ChangeTracker {
    type Result = ResponseFuture<Result<Isolated, String>>;

    fn handle(&mut self, msg: PrepareWorktree, _: &mut Self::Context) -> Self::Result {
        let (git, timeout, dir) = (self.git.clone(), self.settings.snapshot_timeout, self.settings.worktrees.clone());
        let prepare = async move {
            let repo =
                git.locate(&msg.cwd).await.map_err(|e| e.to_string())?.ok_or_else(|| {
                    format!("{} is not inside a git work tree: it cannot be isolated", msg.cwd.display())
                })?;
            let base = match (msg.base_ref, msg.start_tree) {
                (Some(revision), _) => Base::Revision(revision),
                (None, Some(tree)) => Base::WorkTree { tree },
                (None, None) => Base::WorkTree {
                    tree: git.snapshot(&repo, &format!("{}-base", msg.id)).await.map_err(|e| e.to_string())?,
                },
            };
            let path = dir.join(repository_dir_name(&repo.root)).join(msg.id.to_string());
            let branch = format!("warden/{}{}", msg.id, slug(&msg.prompt));
            let prepared = git.create_worktree(&repo, &path, &branch, &base).await.map_err(|e| e.to_string())?;
            let below = msg.cwd.strip_prefix(&repo.root).unwrap_or(Path::new(""));
            Ok::<_, String>(Isolated {
                work_dir: path.join(below),
                worktree: path,
                branch,
                base_commit: prepared.base_commit,
                base_tree: prepared.base_tree,
                base_branch: prepared.base_branch,
            })
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, prepare).await {
                Ok(done) => done.map_err(|e| format!("making its worktree failed: {e}")),
                Err(_) => Err(format!("making its worktree failed: {}", too_slow(timeout))),
            }
        })
    }
}

impl Handler<RemoveWorktree> for ChangeTracker {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: RemoveWorktree, _: &mut Self::Context) -> Self::Result {
        let (git, timeout) = (self.git.clone(), self.settings.snapshot_timeout);
        let remove = async move {
            let repo = git
                .locate(&msg.cwd)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} is no longer inside a git work tree", msg.cwd.display()))?;
            git.remove_worktree(&repo, &msg.worktree, &msg.branch).await.map_err(|e| e.to_string())
        };
        Box::pin(async move { tokio::time::timeout(timeout, remove).await.unwrap_or_else(|_| Err(too_slow(timeout))) })
    }
}

impl Handler<Discard> for ChangeTracker {
    type Result = ResponseFuture<Result<Execution, ChangesError>>;

    fn handle(&mut self, msg: Discard, ctx: &mut Self::Context) -> Self::Result {
        let mut execution = msg.execution;
        let (worktree, branch) = match (&execution.worktree, &execution.branch) {
            _ if !execution.status.is_final() => {
                let why = format!(
                    "execution {} is {}: only a final one's work can be discarded",
                    execution.id, execution.status
                );
                return Box::pin(async move { Err(ChangesError::NoWorktree(why)) });
            }
            (Some(worktree), Some(branch)) => (PathBuf::from(worktree), branch.clone()),
            _ => {
                let why = format!("execution {} has no worktree (not isolated, or discarded already)", execution.id);
                return Box::pin(async move { Err(ChangesError::NoWorktree(why)) });
            }
        };
        let remove = ctx.address().send(RemoveWorktree { cwd: execution.cwd.clone().into(), worktree, branch });
        let store = self.store.clone();
        Box::pin(async move {
            remove
                .await
                .map_err(|e| ChangesError::Worktree(format!("the change tracker did not answer: {e}")))?
                .map_err(ChangesError::Worktree)?;
            execution.branch = None;
            execution.worktree = None;
            let stored = execution.clone();
            store
                .record("discard worktree", move |c, log| {
                    rows::mark_discarded(c, &stored)?;
                    log.record(c, NewEvent::about_execution("execution.discarded", &stored)).map(|_| ())
                })
                .await?;
            Ok(execution)
        })
    }
}

impl Handler<Apply> for ChangeTracker {
    type Result = ResponseFuture<Result<AppliedWork, ChangesError>>;

    fn handle(&mut self, msg: Apply, _: &mut Self::Context) -> Self::Result {
        let execution = msg.execution;
        let id = execution.id;
        let trees = execution.changes.as_ref().and_then(|c| Some((c.start_tree.clone()?, c.end_tree.clone()?)));
        let trees = match (execution.status.is_final(), &execution.worktree, trees) {
            (false, _, _) => {
                Err(format!("execution {id} is {}: only a final one's work can be applied", execution.status))
            }
            (true, None, _) => Err(format!("execution {id} has no worktree (not isolated, or discarded)")),
            (true, Some(_), None) => Err(format!("execution {id} has no recorded end of its work to apply")),
            (true, Some(_), Some(trees)) => Ok(trees),
        };
        let (git, store, timeout) = (self.git.clone(), self.store.clone(), self.settings.snapshot_timeout);
        let cwd = PathBuf::from(&execution.cwd);
        Box::pin(async move {
            let (base, theirs) = trees.map_err(ChangesError::NoWorktree)?;
            let apply = async {
                let repo = git.locate(&cwd).await?.ok_or_else(|| {
                    GitError::new("apply", format!("{} is no longer in a git work tree", cwd.display()))
                })?;
                git.apply_to_work_tree(&repo, &base, &theirs).await
            };
            let applied = tokio::time::timeout(timeout, apply)
                .await
                .map_err(|_| ChangesError::Worktree(too_slow(timeout)))?
                .map_err(|e| ChangesError::Worktree(e.to_string()))?;
            let files = match applied {
                Applied::Clean { files } => files,
                Applied::Conflicts { files } => return Err(ChangesError::Conflict { id, files }),
                Applied::WorkTreeChanged => return Err(ChangesError::WorkTreeChanged(id)),
            };
            let report = AppliedWork { execution_id: id, files };
            let data = serde_json::to_value(&report).unwrap_or_default();
            store
                .record("record applied work", move |c, log| {
                    let event = NewEvent { execution_id: Some(id), ..NewEvent::new("execution.applied", data) };
                    log.record(c, event).map(|_| ())
                })
                .await?;
            Ok(report)
        })
    }
}

impl Handler<Merge> for ChangeTracker {
    type Result = ResponseFuture<Result<MergedWork, ChangesError>>;

    fn handle(&mut self, msg: Merge, _: &mut Self::Context) -> Self::Result {
        let (execution, request) = (msg.execution, msg.request);
        let planned = plan_merge(&execution, &request);
        let (git, store, timeout) = (self.git.clone(), self.store.clone(), self.settings.snapshot_timeout);
        Box::pin(async move {
            let (plan, end_tree) = planned?;
            let id = execution.id;
            let cwd = PathBuf::from(&execution.cwd);
            let worktree = execution.worktree.as_ref().map(PathBuf::from);
            let merge = async {
                let repo = git.locate(&cwd).await?.ok_or_else(|| {
                    GitError::new("merge", format!("{} is no longer in a git work tree", cwd.display()))
                })?;
                // Its branch holds all its work first (the end of a run does this too).
                let message = super::seal_message(&execution);
                git.seal(&repo, &plan.branch, &end_tree, worktree.as_deref(), &message).await?;
                let identity = git.identity(&repo).await;
                let merged = git.merge_branch(&repo, &plan, &identity).await?;
                if matches!(merged, Merged::Done { .. }) {
                    if let Err(e) =
                        git.remove_worktree(&repo, worktree.as_deref().unwrap_or(Path::new("")), &plan.branch).await
                    {
                        tracing::warn!(execution = %id, error = %e, "its worktree stayed after its work was merged");
                    }
                }
                Ok::<_, GitError>(merged)
            };
            let merged = tokio::time::timeout(timeout, merge)
                .await
                .map_err(|_| ChangesError::Worktree(too_slow(timeout)))?
                .map_err(|e| ChangesError::Worktree(e.to_string()))?;
            let not_merged = |code, why: String, files| Err(ChangesError::NotMerged { code, why, files });
            let into = plan.into.clone();
            let (commit, squash, files) = match merged {
                Merged::Done { commit, squash, files } => (commit, squash, files),
                Merged::Conflicts { files } => {
                    let why = format!(
                        "the work of execution {id} does not merge cleanly into {into}: {} conflict (nothing was changed)",
                        files.join(", ")
                    );
                    return not_merged("conflict", why, files);
                }
                Merged::InTheWay { checkout, files, detail } => {
                    let why = format!(
                        "{into} is checked out at {} with uncommitted changes the merge would overwrite (nothing was changed): {detail}",
                        checkout.display()
                    );
                    return not_merged("uncommitted_changes_in_the_way", why, files);
                }
                Merged::NothingToMerge => {
                    return not_merged(
                        "nothing_to_merge",
                        format!("{into} already has the work of execution {id}"),
                        vec![],
                    );
                }
                Merged::BaseNotInTarget => {
                    let why = format!(
                        "execution {id} started from a base that is not in {into}'s history (your uncommitted work, or another branch): a merge commit would bring that too; merge with squash"
                    );
                    return not_merged("base_not_in_target", why, vec![]);
                }
                Merged::UnknownTarget => {
                    return Err(ChangesError::Invalid(format!("into: there is no branch {into:?}")))
                }
                Merged::BranchGone => {
                    let why =
                        format!("the branch {} of execution {id} is gone: it was deleted outside warden", plan.branch);
                    return Err(ChangesError::NoWorktree(why));
                }
                Merged::TargetMoved => {
                    return not_merged(
                        "target_moved",
                        format!("{into} moved while the merge was being made (nothing was changed): try again"),
                        vec![],
                    );
                }
            };
            let report = MergedWork { execution_id: id, into, commit, squash, files };
            let mut gone = execution.clone();
            gone.branch = None;
            gone.worktree = None;
            let data = serde_json::to_value(&report).unwrap_or_default();
            store
                .record("record merged work", move |c, log| {
                    rows::mark_discarded(c, &gone)?;
                    let event = NewEvent { execution_id: Some(id), ..NewEvent::new("execution.merged", data) };
                    log.record(c, event).map(|_| ())
                })
                .await?;
            Ok(report)
        })
    }
}

/// What a merge of `execution`'s work as `request` asks says will be done, and the end
/// of its work (a tree), or why it cannot be.
fn plan_merge(execution: &Execution, request: &MergeRequest) -> Result<(MergePlan, String), ChangesError> {
    let id = execution.id;
    if !execution.status.is_final() {
        let why = format!("execution {id} is {}: only a final one's work can be merged", execution.status);
        return Err(ChangesError::NoWorktree(why));
    }
    let (Some(branch), Some(base)) = (&execution.branch, &execution.base) else {
        let why = format!("execution {id} has no branch (not isolated, or merged or discarded already)");
        return Err(ChangesError::NoWorktree(why));
    };
    let end_tree =
        execution.changes.as_ref().and_then(|c| c.end_tree.clone()).ok_or_else(|| {
            ChangesError::NoWorktree(format!("execution {id} has no recorded end of its work to merge"))
        })?;
    let into = request.into.clone().or_else(|| execution.base_branch.clone()).ok_or_else(|| {
        ChangesError::Invalid(format!(
            "execution {id} did not start from a branch (a detached HEAD or a commit): say which branch with `into`"
        ))
    })?;
    if let Some(why) = bad_branch_name(&into) {
        return Err(ChangesError::Invalid(format!("into: {into:?} {why}")));
    }
    if into == *branch {
        return Err(ChangesError::Invalid(format!("into: {into:?} is the execution's own branch")));
    }
    let message = match &request.message {
        Some(message) if message.trim().is_empty() => {
            return Err(ChangesError::Invalid("message: empty: leave it out for the default".into()))
        }
        Some(message) if message.contains('\0') || message.len() > 64 * 1024 => {
            return Err(ChangesError::Invalid("message: must be text of at most 64 KiB without NUL".into()))
        }
        Some(message) => message.clone(),
        None => {
            let line: String = execution.prompt.lines().next().unwrap_or_default().chars().take(72).collect();
            let title = if line.trim().is_empty() { format!("The work of warden execution {id}") } else { line };
            format!("{title}\n\nThe work of warden execution {id} on {branch}.\n")
        }
    };
    let plan = MergePlan { branch: branch.clone(), base: base.clone(), into, squash: request.squash, message };
    Ok((plan, end_tree))
}

/// Why `name` is not a branch name warden merges into (git's rules, kept strict), if it
/// is not one.
fn bad_branch_name(name: &str) -> Option<&'static str> {
    let forbidden = |c: char| c.is_control() || " ~^:?*[\\".contains(c);
    if name.is_empty() || name.len() > 255 {
        Some("is not a branch name (1 to 255 bytes)")
    } else if name.starts_with('-') || name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        Some("is not a branch name (it starts with - or /, or ends with / or .)")
    } else if name.chars().any(forbidden) || name.contains("..") || name.contains("@{") || name.contains("//") {
        Some("is not a branch name (no spaces, control characters, ~ ^ : ? * [ \\, .., @{ or //)")
    } else if name == "@" || name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
        Some("is not a branch name (a part starts with . or ends with .lock)")
    } else {
        None
    }
}

/// One directory per repository under the worktrees dir: its name and a digest of its
/// path, so two repositories of one name never share it.
fn repository_dir_name(root: &Path) -> String {
    let name: String = root
        .file_name()
        .map(|n| {
            n.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect()
        })
        .unwrap_or_default();
    let digest = crate::credentials::token_hash(&root.to_string_lossy());
    format!("{}-{}", name.trim_start_matches('.'), &digest[..8])
}

/// `-` and the prompt's first words, lower case, as a branch name allows: at most 32
/// characters; empty when the prompt has no such words.
fn slug(prompt: &str) -> String {
    let words: Vec<String> = prompt
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut slug = String::new();
    for word in words {
        if slug.len() + word.len() + 1 > 32 {
            break;
        }
        slug.push('-');
        slug.push_str(&word);
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_words_come_from_the_prompt_and_stay_short_and_plain() {
        assert_eq!(slug("Fix the login bug, please!"), "-fix-the-login-bug-please");
        assert_eq!(slug("../../etc; rm -rf ~ && echo $HOME"), "-etc-rm-rf-echo-home");
        assert_eq!(slug("日本語"), "");
        assert!(slug(&"word ".repeat(50)).len() <= 32);
        assert_eq!(repository_dir_name(Path::new("/home/u/.my app")).split('-').next(), Some("myapp"));
    }

    #[test]
    fn only_plain_branch_names_are_merged_into() {
        for good in ["main", "feature/login", "release-1.2", "user/x_y"] {
            assert_eq!(bad_branch_name(good), None, "{good}");
        }
        for bad in [
            "", "-f", "main~1", "main^", "a..b", "HEAD@{1}", "a b", "x:y", "a/", "/a", ".hidden", "a.lock", "a\nb", "@",
        ] {
            assert!(bad_branch_name(bad).is_some(), "{bad:?} was taken");
        }
    }
}
