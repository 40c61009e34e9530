//! An isolated execution's branch in the user's repository: sealing its work as a commit
//! (so the branch holds all of it, committed or not, with no object in warden's store)
//! and merging it into a branch of theirs without checking anything out.
//!
//! A merge writes a commit with `git merge-tree --write-tree` and moves the target
//! branch with a compare-and-swap `update-ref`. When that branch is checked out (in the
//! main work tree or any linked worktree), its checkout follows the way a fast-forward
//! of git's own does (`read-tree -m -u`), which refuses when an uncommitted change of
//! the user's is in the way: then nothing moves.

use std::path::{Path, PathBuf};

use super::git::{command, output, run, Git, GitError, Repo};

/// What is asked of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergePlan {
    /// The execution's branch.
    pub branch: String,
    /// The commit the execution started from.
    pub base: String,
    /// The branch to merge into.
    pub into: String,
    /// One commit with the execution's work on top of `into` (else a merge commit of
    /// both branches); `None`: a merge commit when `base` is in `into`'s history, else a
    /// squash.
    pub squash: Option<bool>,
    pub message: String,
}

/// What a merge did, or why it did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    Done {
        commit: String,
        squash: bool,
        files: Vec<String>,
    },
    /// These files do not merge cleanly: nothing was written.
    Conflicts {
        files: Vec<String>,
    },
    /// `into` is checked out at `checkout` with uncommitted changes to these files, which
    /// the merge would overwrite: nothing was written.
    InTheWay {
        checkout: PathBuf,
        files: Vec<String>,
        detail: String,
    },
    /// The branch already has everything the execution did.
    NothingToMerge,
    /// A merge commit was asked for, but the execution's base is not in `into`'s history
    /// (it records the user's uncommitted work, or another branch): it would bring that
    /// too.
    BaseNotInTarget,
    /// `into` moved while the merge was being made: nothing was changed.
    TargetMoved,
    /// There is no branch `into`.
    UnknownTarget,
    /// The execution's branch is gone (deleted by hand).
    BranchGone,
}

impl Git {
    /// The branch the user's work tree is on (its HEAD), if it is on one.
    pub async fn current_branch(&self, repo: &Repo) -> Result<Option<String>, GitError> {
        let mut cmd = command(&repo.root);
        cmd.args(["symbolic-ref", "--quiet", "--short", "HEAD"]);
        let found = output(cmd).await.map_err(|e| GitError::new("symbolic-ref", e.to_string()))?;
        Ok(found.status.success().then(|| String::from_utf8_lossy(&found.stdout).trim().to_owned()))
    }

    /// The branch a revision names (`main`, `refs/heads/main`, `HEAD` when on a branch),
    /// if it names one.
    pub async fn branch_named(&self, repo: &Repo, revision: &str) -> Result<Option<String>, GitError> {
        if revision == "HEAD" {
            return self.current_branch(repo).await;
        }
        let name = revision.strip_prefix("refs/heads/").unwrap_or(revision);
        Ok(self.tip(repo, name).await?.map(|_| name.to_owned()))
    }

    /// The commit branch `name` points at, `None` if there is no such branch.
    pub async fn tip(&self, repo: &Repo, name: &str) -> Result<Option<String>, GitError> {
        if name.starts_with('-') {
            return Ok(None);
        }
        let mut cmd = command(&repo.root);
        cmd.args(["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("refs/heads/{name}^{{commit}}")]);
        let found = output(cmd).await.map_err(|e| GitError::new("rev-parse", e.to_string()))?;
        Ok(found.status.success().then(|| String::from_utf8_lossy(&found.stdout).trim().to_owned()))
    }

    /// Records `tree` (an end snapshot written into the repository) as a commit on
    /// `branch` unless the branch has it already; the worktree's index (if it is still
    /// there) follows, keeping what it knows of unchanged files. Returns the branch's tip,
    /// `None` when the branch is gone.
    pub async fn seal(
        &self,
        repo: &Repo,
        branch: &str,
        tree: &str,
        worktree: Option<&Path>,
        message: &str,
    ) -> Result<Option<String>, GitError> {
        let Some(tip) = self.tip(repo, branch).await? else { return Ok(None) };
        let mut current = command(&repo.root);
        current.args(["rev-parse", "--verify", &format!("{tip}^{{tree}}")]);
        if String::from_utf8_lossy(&run(current, "rev-parse").await?).trim() == tree {
            return Ok(Some(tip));
        }
        let sealed = self.commit(repo, tree, &[&tip], message, &warden_identity()).await?;
        let mut update = command(&repo.root);
        update.args([
            "update-ref",
            "-m",
            "warden: the execution's work",
            &format!("refs/heads/{branch}"),
            &sealed,
            &tip,
        ]);
        run(update, "update-ref").await?;
        if let Some(worktree) = worktree.filter(|w| w.is_dir()) {
            let mut follow = command(worktree);
            follow.args(["read-tree", "--reset", &sealed]);
            if let Err(e) = run(follow, "read-tree -m").await {
                tracing::warn!(worktree = %worktree.display(), error = %e, "the worktree's index did not follow its sealed branch");
            }
        }
        Ok(Some(sealed))
    }

    /// Merges the execution's branch into `plan.into` as `identity`.
    pub async fn merge_branch(&self, repo: &Repo, plan: &MergePlan, identity: &Identity) -> Result<Merged, GitError> {
        let Some(target) = self.tip(repo, &plan.into).await? else { return Ok(Merged::UnknownTarget) };
        let Some(theirs) = self.tip(repo, &plan.branch).await? else { return Ok(Merged::BranchGone) };
        let mut ancestor = command(&repo.root);
        ancestor.args(["merge-base", "--is-ancestor", &plan.base, &target]);
        let base_in_target = output(ancestor).await.map_err(|e| GitError::new("merge-base", e.to_string()))?;
        let base_in_target = base_in_target.status.success();
        let squash = match plan.squash {
            Some(false) if !base_in_target => return Ok(Merged::BaseNotInTarget),
            Some(squash) => squash,
            None => !base_in_target,
        };
        // Written into the repository, through warden's shadow git dir (no merge driver
        // or attribute of the repository's config runs).
        let merge = self.in_repo_writing(repo, super::git::Objects::Repository);
        let base = squash.then_some(plan.base.as_str());
        let tree = match super::worktree::merge_tree(merge, base, &target, &theirs).await? {
            Ok(tree) => tree,
            Err(files) => return Ok(Merged::Conflicts { files }),
        };
        let files: Vec<String> =
            self.changed_files(repo, &format!("{target}^{{tree}}"), &tree).await?.into_iter().map(|f| f.path).collect();
        if files.is_empty() {
            return Ok(Merged::NothingToMerge);
        }
        let parents: Vec<&str> = if squash { vec![&target] } else { vec![&target, &theirs] };
        let commit = self.commit(repo, &tree, &parents, &plan.message, identity).await?;

        let checkout = self.checkout_of(repo, &plan.into).await?;
        if let Some(checkout) = &checkout {
            let mut refresh = command(checkout);
            refresh.args(["update-index", "-q", "--refresh"]);
            let _ = output(refresh).await;
            let mut follow = command(checkout);
            follow.args(["read-tree", "-m", "-u", &target, &commit]);
            let followed = output(follow).await.map_err(|e| GitError::new("read-tree", e.to_string()))?;
            if !followed.status.success() {
                let detail = String::from_utf8_lossy(&followed.stderr).trim().to_owned();
                return Ok(Merged::InTheWay { checkout: checkout.clone(), files: files_named_in(&detail), detail });
            }
        }
        let mut update = command(&repo.root);
        let reason = format!("warden: merge of {}", plan.branch);
        update.args(["update-ref", "-m", &reason, &format!("refs/heads/{}", plan.into), &commit, &target]);
        if run(update, "update-ref").await.is_err() {
            if let Some(checkout) = &checkout {
                let mut back = command(checkout);
                back.args(["read-tree", "-m", "-u", &commit, &target]);
                run(back, "read-tree").await?;
            }
            return Ok(Merged::TargetMoved);
        }
        Ok(Merged::Done { commit, squash, files })
    }

    /// Where branch `name` is checked out, if it is (the main work tree or a linked one).
    async fn checkout_of(&self, repo: &Repo, name: &str) -> Result<Option<PathBuf>, GitError> {
        let mut list = command(&repo.root);
        list.args(["worktree", "list", "--porcelain", "-z"]);
        let listed = run(list, "worktree list").await?;
        let wanted = format!("branch refs/heads/{name}");
        let mut path = None;
        for field in listed.split(|&b| b == 0).map(String::from_utf8_lossy) {
            if let Some(at) = field.strip_prefix("worktree ") {
                path = Some(PathBuf::from(at));
            } else if field == wanted {
                return Ok(path);
            }
        }
        Ok(None)
    }

    /// A commit of `tree` with these parents, in the repository.
    pub(super) async fn commit(
        &self,
        repo: &Repo,
        tree: &str,
        parents: &[&str],
        message: &str,
        identity: &Identity,
    ) -> Result<String, GitError> {
        let mut commit = command(&repo.root);
        commit
            .env("GIT_AUTHOR_NAME", &identity.name)
            .env("GIT_AUTHOR_EMAIL", &identity.email)
            .env("GIT_COMMITTER_NAME", &identity.name)
            .env("GIT_COMMITTER_EMAIL", &identity.email)
            .args(["commit-tree", tree]);
        for parent in parents {
            commit.args(["-p", parent]);
        }
        commit.args(["-m", message]);
        Ok(String::from_utf8_lossy(&run(commit, "commit-tree").await?).trim().to_owned())
    }

    /// Who the user is to git in this repository (its config, then their global one),
    /// for the commits made on their behalf.
    pub async fn identity(&self, repo: &Repo) -> Identity {
        let get = |key: &'static str| {
            // Reading config runs nothing, so here the user's global config may be read.
            let mut cmd = tokio::process::Command::new("git");
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("GIT_") {
                    cmd.env_remove(name);
                }
            }
            cmd.current_dir(&repo.root).args(["config", "--get", key]).stdin(std::process::Stdio::null());
            async move {
                let out = cmd.output().await.ok().filter(|o| o.status.success())?;
                Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|v| !v.is_empty())
            }
        };
        let fallback = warden_identity();
        Identity {
            name: get("user.name").await.unwrap_or(fallback.name),
            email: get("user.email").await.unwrap_or(fallback.email),
        }
    }
}

/// A name and email for commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

pub(super) fn warden_identity() -> Identity {
    Identity { name: "warden".into(), email: "warden@localhost".into() }
}

/// The paths git names in quotes in an error ("Entry 'a.txt' not uptodate").
fn files_named_in(detail: &str) -> Vec<String> {
    let mut files: Vec<String> = detail
        .lines()
        .flat_map(|line| line.split('\'').skip(1).step_by(2))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    // Listed below a heading, one per tab-indented line.
    files.extend(detail.lines().filter_map(|l| l.strip_prefix('\t')).map(|l| l.trim().to_owned()));
    files.sort();
    files.dedup();
    files
}

#[cfg(test)]
mod tests {
    use super::super::testing::git;
    use super::super::worktree::Base;
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap_or_default()
    }

    /// A repository on `main` with two committed files and an uncommitted edit of a.txt.
    fn repository(dir: &Path) -> PathBuf {
        let root = dir.join("repo");
        std::fs::create_dir_all(&root).unwrap();
        git(&root, &["init", "-q"]);
        write(&root, "a.txt", "a\n");
        write(&root, "c.txt", "c1\nc2\nc3\n");
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-qm", "first"]);
        write(&root, "a.txt", "a, the user's uncommitted edit\n");
        root
    }

    struct Run {
        tools: Git,
        repo: Repo,
        worktree: PathBuf,
        branch: String,
        base: String,
    }

    /// An isolated execution from `base` that edits c.txt's last line, adds b.txt, and
    /// ends (its work sealed on its branch as warden records it).
    async fn run_agent(dir: &Path, root: &Path, base: Base, name: &str) -> Run {
        let tools = Git::new(&dir.join("warden-git"));
        let repo = tools.locate(root).await.unwrap().expect("a work tree");
        let worktree = dir.join("worktrees").join(name);
        let branch = format!("warden/{name}");
        let made = tools.create_worktree(&repo, &worktree, &branch, &base).await.unwrap();
        write(&worktree, "c.txt", "c1\nc2\nc3, the agent's\n");
        write(&worktree, "b.txt", "b, new\n");
        let agent = tools.locate(&worktree).await.unwrap().unwrap();
        let end = tools.snapshot_into_repository(&agent, "end").await.unwrap();
        tools.seal(&agent, &branch, &end, Some(&worktree), "the agent's work").await.unwrap().expect("sealed");
        Run { tools, repo, worktree, branch, base: made.base_commit }
    }

    fn plan(run: &Run, into: &str, squash: Option<bool>) -> MergePlan {
        MergePlan {
            branch: run.branch.clone(),
            base: run.base.clone(),
            into: into.into(),
            squash,
            message: "the agent's work\n".into(),
        }
    }

    fn me() -> Identity {
        Identity { name: "Dev".into(), email: "dev@example.com".into() }
    }

    #[tokio::test]
    async fn a_sealed_branch_holds_the_work_and_its_worktree_stays_clean() {
        let dir = tempfile::tempdir().unwrap();
        let root = repository(dir.path());
        let run = run_agent(dir.path(), &root, Base::WorkTree, "1").await;
        assert_eq!(git(&root, &["show", &format!("{}:b.txt", run.branch)]), "b, new");
        assert_eq!(git(&run.worktree, &["status", "--porcelain"]), "", "the worktree's index did not follow");
        // Every object of the branch is in the repository, none only in warden's store.
        git(&root, &["fsck", "--connectivity-only", "--no-dangling"]);
        git(&root, &["rev-list", "--objects", "--missing=error", &run.branch]);
        // Sealing again with nothing new is no new commit.
        let agent = run.tools.locate(&run.worktree).await.unwrap().unwrap();
        let end = run.tools.snapshot_into_repository(&agent, "end").await.unwrap();
        let tip = git(&root, &["rev-parse", &run.branch]);
        assert_eq!(run.tools.seal(&agent, &run.branch, &end, None, "x").await.unwrap(), Some(tip));
    }

    #[tokio::test]
    async fn a_merge_into_the_checked_out_branch_keeps_the_users_uncommitted_work() {
        let dir = tempfile::tempdir().unwrap();
        let root = repository(dir.path());
        let run = run_agent(dir.path(), &root, Base::WorkTree, "2").await;
        let main_before = git(&root, &["rev-parse", "main"]);

        let merged = run.tools.merge_branch(&run.repo, &plan(&run, "main", None), &me()).await.unwrap();
        let Merged::Done { commit, squash, mut files } = merged else { panic!("{merged:?}") };
        files.sort();
        // Its base holds the user's uncommitted work, so it is one commit on main's tip,
        // with the agent's work and not the user's uncommitted edit.
        assert!(squash);
        assert_eq!(files, ["b.txt", "c.txt"]);
        assert_eq!(git(&root, &["rev-parse", "main"]), commit);
        assert_eq!(git(&root, &["rev-parse", "main^"]), main_before);
        assert_eq!(
            git(&root, &["log", "-1", "--format=%an <%ae>|%s", "main"]),
            "Dev <dev@example.com>|the agent's work"
        );
        assert_eq!(git(&root, &["show", "main:a.txt"]), "a");
        // The checkout followed; the user's uncommitted edit is still there, uncommitted.
        assert_eq!(read(&root, "c.txt"), "c1\nc2\nc3, the agent's\n");
        assert_eq!(read(&root, "b.txt"), "b, new\n");
        assert_eq!(read(&root, "a.txt"), "a, the user's uncommitted edit\n");
        assert_eq!(git(&root, &["status", "--porcelain"]), "M a.txt");

        // Merged again: nothing to merge.
        let again = run.tools.merge_branch(&run.repo, &plan(&run, "main", None), &me()).await.unwrap();
        assert_eq!(again, Merged::NothingToMerge);
        // A merge commit would make the user's uncommitted work history: refused.
        let refused = run.tools.merge_branch(&run.repo, &plan(&run, "main", Some(false)), &me()).await.unwrap();
        assert_eq!(refused, Merged::BaseNotInTarget);
        let unknown = run.tools.merge_branch(&run.repo, &plan(&run, "nope", None), &me()).await.unwrap();
        assert_eq!(unknown, Merged::UnknownTarget);
    }

    #[tokio::test]
    async fn an_uncommitted_change_in_the_way_or_a_conflict_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = repository(dir.path());
        let run = run_agent(dir.path(), &root, Base::Revision("HEAD".into()), "3").await;
        // The user edits c.txt, which the merge would change, without committing.
        write(&root, "c.txt", "c1, the user's\nc2\nc3\n");
        let state = |root: &Path| {
            (git(root, &["rev-parse", "main"]), std::fs::read(root.join(".git/index")).unwrap(), read(root, "c.txt"))
        };
        let before = state(&root);
        let merged = run.tools.merge_branch(&run.repo, &plan(&run, "main", None), &me()).await.unwrap();
        let Merged::InTheWay { checkout, files, .. } = merged else { panic!("{merged:?}") };
        assert_eq!((checkout, files), (root.clone(), vec!["c.txt".to_owned()]));
        assert_eq!(state(&root).0, before.0, "main moved");
        assert_eq!(state(&root).2, before.2, "the user's edit changed");
        assert!(!root.join("b.txt").exists());

        // The user commits a different last line of c.txt: a conflict, nothing written.
        write(&root, "c.txt", "c1\nc2\nc3, the user's\n");
        git(&root, &["commit", "-qam", "mine"]);
        let before = state(&root);
        let merged = run.tools.merge_branch(&run.repo, &plan(&run, "main", None), &me()).await.unwrap();
        assert_eq!(merged, Merged::Conflicts { files: vec!["c.txt".into()] });
        assert_eq!(state(&root), before);
    }

    #[tokio::test]
    async fn a_clean_base_merges_as_a_merge_commit_into_a_branch_checked_out_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let root = repository(dir.path());
        git(&root, &["branch", "feature"]);
        let other = dir.path().join("other");
        git(&root, &["worktree", "add", "-q", other.to_str().unwrap(), "feature"]);
        let run = run_agent(dir.path(), &root, Base::Revision("feature".into()), "4").await;
        let merged = run.tools.merge_branch(&run.repo, &plan(&run, "feature", None), &me()).await.unwrap();
        let Merged::Done { commit, squash: false, .. } = merged else { panic!("{merged:?}") };
        let parents = git(&root, &["log", "-1", "--format=%P", "feature"]);
        assert_eq!(parents.split(' ').count(), 2, "not a merge commit: {parents}");
        assert_eq!(git(&other, &["rev-parse", "HEAD"]), commit);
        // The other worktree's checkout followed, and git sees it clean.
        assert_eq!(read(&other, "b.txt"), "b, new\n");
        assert_eq!(git(&other, &["status", "--porcelain"]), "");
        // main (checked out in the user's root) did not move.
        assert_eq!(git(&root, &["rev-parse", "main"]), git(&root, &["rev-parse", "feature^1"]));
        assert!(!root.join("b.txt").exists());
    }
}
