//! The ChangeTracker's worktree messages: make an isolated execution's worktree (the
//! ExecutionMonitor asks when the execution's slot is granted and its start snapshot
//! taken) and remove one (a discard, or a worktree made for an execution cancelled
//! meanwhile). Git runs in child processes, never on the actor's thread, within the
//! snapshot timeout.

use std::path::{Path, PathBuf};

use actix::prelude::*;

use super::branch::{MergePlan, Merged};
use super::git::{Git, GitError, Repo};
use super::worktree::{Applied, Base};
use super::{too_slow, ChangeTracker, ChangesError};
use crate::domain::{AppliedWork, Execution, ExecutionId, MergeRequest, MergedWork, NewEvent, SessionId};
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
    /// A session's turn goes on in the worktree and on the branch of its earlier turns.
    pub session_id: Option<SessionId>,
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
    /// A session's earlier turns made it: it is theirs, not this execution's alone.
    pub shared: bool,
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
        let store = self.store.clone();
        let id = msg.id;
        let prepare = async move {
            let repo =
                git.locate(&msg.cwd).await.map_err(|e| e.to_string())?.ok_or_else(|| {
                    format!("{} is not inside a git work tree: it cannot be isolated", msg.cwd.display())
                })?;
            let below = msg.cwd.strip_prefix(&repo.root).unwrap_or(Path::new("")).to_owned();
            let path = dir.join(repository_dir_name(&repo.root)).join(msg.id.to_string());
            if let Some(session) = msg.session_id {
                let earlier = store
                    .read("find the session's worktree", move |c| rows::session_worktree(c, session, id))
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(shared) = earlier {
                    if let Some(isolated) = continue_session(&git, &repo, shared, path.clone(), &below).await? {
                        return Ok(isolated);
                    }
                }
            }
            let base = msg.base_ref.map_or(Base::WorkTree, Base::Revision);
            let branch = format!("warden/{}{}", msg.id, slug(&msg.prompt));
            let prepared = git.create_worktree(&repo, &path, &branch, &base).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(Isolated {
                work_dir: path.join(below),
                worktree: path,
                branch,
                base_commit: prepared.base_commit,
                base_tree: prepared.base_tree,
                base_branch: prepared.base_branch,
                shared: false,
            })
        };
        let store = self.store.clone();
        Box::pin(async move {
            let isolated = match tokio::time::timeout(timeout, prepare).await {
                Ok(done) => done.map_err(|e| format!("making its worktree failed: {e}"))?,
                Err(_) => return Err(format!("making its worktree failed: {}", too_slow(timeout))),
            };
            let data = serde_json::json!({
                "execution_id": id, "worktree": isolated.worktree, "branch": isolated.branch,
                "base": isolated.base_commit, "base_branch": isolated.base_branch,
            });
            let event = NewEvent { execution_id: Some(id), ..NewEvent::new("execution.prepared", data) };
            if let Err(e) =
                store.record("record a prepared worktree", move |c, log| log.record(c, event).map(|_| ())).await
            {
                tracing::warn!(execution = %id, error = %e, "execution.prepared was not recorded");
            }
            Ok(isolated)
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
        let branch = match work_of(&execution, "discarded") {
            Ok((branch, _)) => branch,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let worktree = execution.worktree.clone().unwrap_or_default().into();
        let remove = ctx.address().send(RemoveWorktree { cwd: execution.cwd.clone().into(), worktree, branch });
        let store = self.store.clone();
        Box::pin(async move {
            remove
                .await
                .map_err(|e| ChangesError::Worktree(format!("the change tracker did not answer: {e}")))?
                .map_err(ChangesError::Worktree)?;
            let branch = execution.branch.take().unwrap_or_default();
            execution.worktree = None;
            let event = NewEvent::about_execution("execution.discarded", &execution);
            store
                .record("discard worktree", move |c, log| {
                    rows::forget_branch(c, &branch)?;
                    log.record(c, event).map(|_| ())
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
        let planned = work_of(&execution, "applied");
        let (git, store, timeout) = (self.git.clone(), self.store.clone(), self.settings.snapshot_timeout);
        let cwd = PathBuf::from(&execution.cwd);
        Box::pin(async move {
            let (branch, base) = planned?;
            let apply = async {
                let repo = git.locate(&cwd).await?.ok_or_else(|| {
                    GitError::new("apply", format!("{} is no longer in a git work tree", cwd.display()))
                })?;
                let Some(theirs) = work_now(&git, &repo, &execution, &branch).await? else {
                    return Ok(None);
                };
                let base = git.tree_of(&repo, &base).await?;
                git.apply_to_work_tree(&repo, &base, &theirs).await.map(Some)
            };
            let applied = tokio::time::timeout(timeout, apply)
                .await
                .map_err(|_| ChangesError::Worktree(too_slow(timeout)))?
                .map_err(|e| ChangesError::Worktree(e.to_string()))?;
            let files = match applied {
                None => {
                    return Err(ChangesError::NoWorktree(format!(
                        "the branch {} of execution {id} is gone",
                        execution.branch.unwrap_or_default()
                    )))
                }
                Some(Applied::Clean { files }) => files,
                Some(Applied::Conflicts { files }) => return Err(ChangesError::Conflict { id, files }),
                Some(Applied::WorkTreeChanged) => return Err(ChangesError::WorkTreeChanged(id)),
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
            let plan = planned?;
            let id = execution.id;
            let cwd = PathBuf::from(&execution.cwd);
            let worktree = execution.worktree.as_ref().map(PathBuf::from);
            let merge = async {
                let repo = git.locate(&cwd).await?.ok_or_else(|| {
                    GitError::new("merge", format!("{} is no longer in a git work tree", cwd.display()))
                })?;
                if work_now(&git, &repo, &execution, &plan.branch).await?.is_none() {
                    return Ok(Merged::BranchGone);
                }
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
            let data = serde_json::to_value(&report).unwrap_or_default();
            let branch = plan.branch;
            store
                .record("record merged work", move |c, log| {
                    rows::forget_branch(c, &branch)?;
                    let event = NewEvent { execution_id: Some(id), ..NewEvent::new("execution.merged", data) };
                    log.record(c, event).map(|_| ())
                })
                .await?;
            Ok(report)
        })
    }
}

/// The branch and base commit of a final isolated execution's work, or why its work
/// cannot be `done` (applied, merged, discarded): not final, or no branch.
fn work_of(execution: &Execution, done: &str) -> Result<(String, String), ChangesError> {
    let id = execution.id;
    match (execution.status.is_final(), &execution.branch, &execution.base) {
        (false, _, _) => Err(ChangesError::NoWorktree(format!(
            "execution {id} is {}: only a final one's work can be {done}",
            execution.status
        ))),
        (true, Some(branch), Some(base)) => Ok((branch.clone(), base.clone())),
        _ => Err(ChangesError::NoWorktree(format!(
            "execution {id} has no branch (not isolated, or merged or discarded already)"
        ))),
    }
}

/// What a merge of `execution`'s work as `request` asks says will be done, or why it
/// cannot be.
fn plan_merge(execution: &Execution, request: &MergeRequest) -> Result<MergePlan, ChangesError> {
    let id = execution.id;
    let (branch, base) = work_of(execution, "merged")?;
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
    let plan = MergePlan { branch, base, into, squash: request.squash, message };
    Ok(plan)
}

/// An isolated execution's work as it is now, as a tree its branch holds: a worktree
/// still there is snapshotted (into the repository) and recorded on the branch first, so
/// what was done there after the execution ended counts too; without one, the branch's
/// tree. `None` when the branch is gone.
async fn work_now(git: &Git, repo: &Repo, execution: &Execution, branch: &str) -> Result<Option<String>, GitError> {
    if let Some(worktree) = execution.worktree.as_ref().map(PathBuf::from).filter(|w| w.is_dir()) {
        if let Some(inside) = git.locate(&worktree).await? {
            let tree = git.snapshot_into_repository(&inside, &format!("{}-now", execution.id)).await?;
            if git.seal(repo, branch, &tree, Some(&worktree), &super::seal_message(execution)).await?.is_none() {
                return Ok(None);
            }
            return Ok(Some(tree));
        }
    }
    match git.tip(repo, branch).await? {
        Some(tip) => git.tree_of(repo, &tip).await.map(Some),
        None => Ok(None),
    }
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

/// A session's next turn on the worktree and branch its earlier turns left, the directory made again at `path` if it was
/// removed; `None` when the branch is gone (merged or deleted): a new worktree then.
/// Its base is the session's, so its changes are the session's work so far.
async fn continue_session(
    git: &super::git::Git,
    repo: &super::git::Repo,
    shared: rows::SessionWorktree,
    path: PathBuf,
    below: &Path,
) -> Result<Option<Isolated>, String> {
    let rows::SessionWorktree { worktree, branch, base: base_commit, base_branch } = shared;
    if git.tip(repo, &branch).await.map_err(|e| e.to_string())?.is_none() {
        return Ok(None);
    }
    let worktree = match worktree.map(PathBuf::from).filter(|w| w.is_dir()) {
        Some(worktree) => worktree,
        None => {
            git.reattach_worktree(repo, &path, &branch).await.map_err(|e| e.to_string())?;
            path
        }
    };
    let base_tree = git.tree_of(repo, &base_commit).await.map_err(|e| e.to_string())?;
    let work_dir = worktree.join(below);
    Ok(Some(Isolated { work_dir, worktree, branch, base_commit, base_tree, base_branch, shared: true }))
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
