//! Git worktrees for isolated executions: one made on a branch of its own from a base
//! (the work tree as a snapshot saw it, with the user's uncommitted and untracked files,
//! or a commit), and removed with its branch.
//!
//! The user's work tree, index, HEAD, stash and other branches are never touched: the
//! worktree gets a new branch and a git dir under the repository's `worktrees/`, and
//! its files are checked out through warden's shadow git dir (so no filter, hook or
//! fsmonitor the repository configures runs). When the base holds uncommitted work, a
//! base commit on top of HEAD records it, its objects written into the repository (the
//! branch must not depend on warden's own object store).
//!

use std::path::{Path, PathBuf};

use super::git::{command, run, Git, GitError, Repo};

/// What a worktree starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// The user's work tree as it is now: HEAD plus their uncommitted and untracked, not
    /// ignored, files.
    WorkTree,
    /// A commit (any revision naming one, e.g. `HEAD` or a branch): a clean start.
    Revision(String),
}

/// A name for a temporary index: the worktree directory's name.
fn slug_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A worktree made for an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub path: PathBuf,
    pub branch: String,
    /// The commit the branch starts at: what the execution's work is compared with.
    pub base_commit: String,
    pub base_tree: String,
    /// The branch the base came from (what a merge goes into by default), if any.
    pub base_branch: Option<String>,
}

impl Git {
    /// Makes a worktree at `path` on a new branch `branch` from `base`. What an earlier
    /// attempt left at that path or branch (a crash while preparing) is removed first.
    /// For a `WorkTree` base, the user's work tree is snapshotted (its objects into the
    /// repository) and recorded as a commit on top of HEAD.
    /// Few git processes, and some at once: each costs a few milliseconds to start, next
    /// to the checkout itself.
    pub async fn create_worktree(
        &self,
        repo: &Repo,
        path: &Path,
        branch: &str,
        base: &Base,
    ) -> Result<Prepared, GitError> {
        let revision = match base {
            Base::WorkTree => "HEAD",
            Base::Revision(revision) => revision.as_str(),
        };
        let shadow = async {
            tokio::fs::create_dir_all(&self.objects)
                .await
                .map_err(|e| GitError::new("worktree", format!("{}: {e}", self.objects.display())))?;
            self.prepare_shadow(repo).await
        };
        let snapshot = async {
            match base {
                Base::WorkTree => {
                    self.snapshot_into_repository(repo, &format!("base-{}", slug_of(path))).await.map(Some)
                }
                Base::Revision(_) => Ok(None),
            }
        };
        // At once: each git costs a few milliseconds to start. (The checkout is not
        // overlapped with the snapshot: on two cores both only got slower.)
        let (resolved, base_branch, shadow, tree) =
            tokio::join!(self.resolve_commit(repo, revision), self.branch_named(repo, revision), shadow, snapshot);
        let (start, start_tree) = resolved.map_err(|e| match base {
            Base::WorkTree => {
                GitError::new("worktree", "the repository has no commit yet: isolation needs one to branch from")
            }
            Base::Revision(_) => e,
        })?;
        let (base_branch, (), tree) = (base_branch?, shadow?, tree?);
        // The user's uncommitted work, as a commit on top of HEAD.
        let (base_commit, base_tree) = match tree {
            Some(tree) if tree != start_tree => {
                let identity = super::branch::warden_identity();
                let message = "warden: the work tree as the execution started from it";
                (self.commit(repo, &tree, &[&start], message, &identity).await?, tree)
            }
            _ => (start, start_tree),
        };
        let add = || {
            let mut add = command(&repo.root);
            add.args(["worktree", "add", "--quiet", "--no-checkout", "-b", branch]).arg(path).arg(&base_commit);
            run(add, "worktree add")
        };
        if add().await.is_err() {
            // Left by an earlier attempt: removed, then made again.
            self.remove_worktree(repo, path, branch).await?;
            if path.exists() {
                return Err(GitError::new("worktree", format!("{} exists and is not a worktree", path.display())));
            }
            add().await?;
        }
        let index = self.worktree_index(path).await?;
        let mut checkout = self.in_worktree(repo, path, &index);
        checkout.args(["read-tree", "-u", "--reset", &base_tree]);
        run(checkout, "read-tree").await?;
        Ok(Prepared { path: path.to_owned(), branch: branch.to_owned(), base_commit, base_tree, base_branch })
    }

    /// Makes a worktree at `path` on the existing `branch` again (its directory was
    /// removed after `keep_days` or by the user; a session's next turn goes on there).
    pub async fn reattach_worktree(&self, repo: &Repo, path: &Path, branch: &str) -> Result<(), GitError> {
        tokio::fs::create_dir_all(&self.objects)
            .await
            .map_err(|e| GitError::new("worktree", format!("{}: {e}", self.objects.display())))?;
        self.prepare_shadow(repo).await?;
        let mut prune = command(&repo.root);
        prune.args(["worktree", "prune"]);
        run(prune, "worktree prune").await?;
        if path.exists() {
            return Err(GitError::new("worktree", format!("{} exists and is not a worktree", path.display())));
        }
        let mut add = command(&repo.root);
        add.args(["worktree", "add", "--quiet", "--no-checkout"]).arg(path).arg(branch);
        run(add, "worktree add").await?;
        let index = self.worktree_index(path).await?;
        // The shadow git dir has no refs: the commit is named by id.
        let tip = self.tree_of(repo, &format!("refs/heads/{branch}")).await?;
        let mut checkout = self.in_worktree(repo, path, &index);
        checkout.args(["read-tree", "-u", "--reset", &tip]);
        run(checkout, "read-tree").await?;
        Ok(())
    }

    /// Removes a worktree's directory and its entry in the repository, keeping its branch;
    /// a directory already gone (deleted by the user) only has its entry pruned.
    pub async fn remove_worktree_dir(&self, repo: &Repo, path: &Path) -> Result<(), GitError> {
        if !path.as_os_str().is_empty() {
            let mut remove = command(&repo.root);
            remove.args(["worktree", "remove", "--force", "--force"]).arg(path);
            let _ = run(remove, "worktree remove").await;
        }
        let mut prune = command(&repo.root);
        prune.args(["worktree", "prune"]);
        run(prune, "worktree prune").await.map(|_| ())
    }

    /// Removes a worktree and its branch; what is already gone (a directory the user
    /// deleted, a branch never made) is fine.
    pub async fn remove_worktree(&self, repo: &Repo, path: &Path, branch: &str) -> Result<(), GitError> {
        self.remove_worktree_dir(repo, path).await?;
        let mut exists = command(&repo.root);
        exists.args(["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]);
        if run(exists, "rev-parse").await.is_ok() {
            let mut delete = command(&repo.root);
            delete.args(["branch", "--quiet", "-D", branch]);
            run(delete, "branch -D").await?;
        }
        Ok(())
    }

    /// The commit a revision names and its tree.
    async fn resolve_commit(&self, repo: &Repo, revision: &str) -> Result<(String, String), GitError> {
        if revision.starts_with('-') {
            return Err(GitError::new("rev-parse", format!("{revision:?} is not a revision")));
        }
        let mut cmd = command(&repo.root);
        cmd.args(["rev-parse", "--quiet", &format!("{revision}^{{commit}}"), &format!("{revision}^{{tree}}")]);
        let found =
            run(cmd, "rev-parse").await.map_err(|_| GitError::new("rev-parse", format!("no commit {revision:?}")))?;
        let found = String::from_utf8_lossy(&found);
        match found.split_whitespace().collect::<Vec<_>>()[..] {
            [commit, tree] => Ok((commit.to_owned(), tree.to_owned())),
            _ => Err(GitError::new("rev-parse", format!("unexpected output {found:?}"))),
        }
    }

    pub(super) async fn tree_of(&self, repo: &Repo, commit: &str) -> Result<String, GitError> {
        let mut cmd = command(&repo.root);
        cmd.args(["rev-parse", "--verify", &format!("{commit}^{{tree}}")]);
        Ok(String::from_utf8_lossy(&run(cmd, "rev-parse").await?).trim().to_owned())
    }

    /// The index file of a worktree (in its git dir under the repository's `worktrees/`,
    /// which its `.git` file names).
    async fn worktree_index(&self, path: &Path) -> Result<PathBuf, GitError> {
        let dot_git = path.join(".git");
        let text = tokio::fs::read_to_string(&dot_git)
            .await
            .map_err(|e| GitError::new("worktree", format!("{}: {e}", dot_git.display())))?;
        let dir = text
            .strip_prefix("gitdir: ")
            .map(str::trim_end)
            .ok_or_else(|| GitError::new("worktree", format!("{} is not a worktree's .git file", dot_git.display())))?;
        Ok(path.join(dir).join("index"))
    }

    /// A git over a worktree with warden's shadow git dir and the worktree's own index;
    /// objects are read from the repository and warden's store.
    fn in_worktree(&self, repo: &Repo, path: &Path, index: &Path) -> tokio::process::Command {
        let mut cmd = self.in_repo(repo);
        cmd.current_dir(path).env("GIT_WORK_TREE", path).env("GIT_INDEX_FILE", index);
        cmd
    }
}

/// What applying an execution's work onto the user's work tree found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied: these files of the user's work tree changed (left uncommitted).
    Clean { files: Vec<String> },
    /// Nothing was changed: these files would not merge cleanly.
    Conflicts { files: Vec<String> },
    /// Nothing was changed: the user's files changed while the work was being merged.
    WorkTreeChanged,
}

impl Git {
    /// Merges the change from `base` to `theirs` (trees) into the user's work tree as it
    /// is now, 3-way, leaving the result uncommitted: their index, HEAD and branches are
    /// not touched. Only when every file merges cleanly is anything written.
    pub async fn apply_to_work_tree(&self, repo: &Repo, base: &str, theirs: &str) -> Result<Applied, GitError> {
        let ours = self.snapshot(repo, "apply").await?;
        self.merge_into_work_tree(repo, &ours, base, theirs).await
    }

    /// Merges into the work tree that `ours` (a snapshot) recorded; if its files changed
    /// since, nothing is written.
    async fn merge_into_work_tree(
        &self,
        repo: &Repo,
        ours: &str,
        base: &str,
        theirs: &str,
    ) -> Result<Applied, GitError> {
        let ours = ours.to_owned();
        let result = match merge_tree(self.in_repo(repo), Some(base), &ours, theirs).await? {
            Ok(tree) => tree,
            Err(files) => return Ok(Applied::Conflicts { files }),
        };
        let files = self.changed_files(repo, &ours, &result).await?.into_iter().map(|f| f.path).collect();
        // A scratch index of the work tree as snapshotted, refreshed against the files
        // (a file changed since the snapshot stops it), then moved to the result.
        let index = self.scratch.join(format!("apply-{}.index", hex::encode(rand::random::<[u8; 6]>())));
        let with_index = |args: &[&str]| {
            let mut cmd = self.in_repo(repo);
            cmd.env("GIT_INDEX_FILE", &index).args(args);
            cmd
        };
        let moved = async {
            run(with_index(&["read-tree", &ours]), "read-tree").await?;
            if run(with_index(&["update-index", "--refresh"]), "update-index").await.is_err() {
                return Ok(Applied::WorkTreeChanged);
            }
            run(with_index(&["read-tree", "-m", "-u", &ours, &result]), "read-tree -m -u").await?;
            Ok(Applied::Clean { files })
        }
        .await;
        let _ = tokio::fs::remove_file(&index).await;
        moved
    }
}

/// Runs `git merge-tree --write-tree` with `git` (whose environment says where the
/// result's objects go) on two commits or trees: the merged tree, or the files that
/// conflict.
pub(super) async fn merge_tree(
    mut git: tokio::process::Command,
    base: Option<&str>,
    ours: &str,
    theirs: &str,
) -> Result<Result<String, Vec<String>>, GitError> {
    git.args(["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z"]);
    if let Some(base) = base {
        git.arg(format!("--merge-base={base}"));
    }
    git.args([ours, theirs]);
    let merged = super::git::output(git).await.map_err(|e| GitError::new("merge-tree", e.to_string()))?;
    let mut fields = merged.stdout.split(|&b| b == 0).map(|f| String::from_utf8_lossy(f).into_owned());
    let tree = fields.next().unwrap_or_default();
    match merged.status.code() {
        Some(0) => Ok(Ok(tree)),
        Some(1) => {
            let mut files: Vec<String> = fields.filter(|f| !f.is_empty()).collect();
            files.dedup();
            Ok(Err(files))
        }
        _ => Err(GitError::new("merge-tree", String::from_utf8_lossy(&merged.stderr).trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::git;
    use super::*;

    /// A repository with one commit, an edit, an untracked file and an ignored one.
    fn repository(dir: &Path) -> PathBuf {
        let root = dir.join("repo");
        std::fs::create_dir_all(root.join("src")).unwrap();
        git(&root, &["init", "-q"]);
        std::fs::write(root.join("src/a.txt"), "one\n").unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-qm", "first"]);
        std::fs::write(root.join("src/a.txt"), "one\ntwo, not committed\n").unwrap();
        std::fs::write(root.join("new.txt"), "untracked\n").unwrap();
        std::fs::write(root.join("debug.log"), "ignored\n").unwrap();
        root
    }

    /// What a user would notice changed in their repository: work tree files, index,
    /// HEAD, branches other than warden's, stash.
    fn user_state(root: &Path) -> (Vec<u8>, String, String, String, String) {
        let index = std::fs::read(root.join(".git/index")).unwrap();
        let files = ["src/a.txt", "new.txt", "debug.log"].map(|f| std::fs::read_to_string(root.join(f)).unwrap());
        let branches =
            git(root, &["for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/main", "refs/stash"]);
        (index, files.join("|"), git(root, &["rev-parse", "HEAD"]), branches, git(root, &["status", "--porcelain"]))
    }

    #[tokio::test]
    async fn a_worktree_from_the_work_tree_has_the_users_uncommitted_files_and_touches_nothing_of_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = repository(dir.path());
        let tools = Git::new(&dir.path().join("warden-git"));
        let repo = tools.locate(&root).await.unwrap().expect("a work tree");
        let before = user_state(&root);
        let path = dir.path().join("worktrees/7");
        let made = tools.create_worktree(&repo, &path, "warden/7-edit", &Base::WorkTree).await.unwrap();

        assert_eq!(std::fs::read_to_string(path.join("src/a.txt")).unwrap(), "one\ntwo, not committed\n");
        assert_eq!(std::fs::read_to_string(path.join("new.txt")).unwrap(), "untracked\n");
        assert!(!path.join("debug.log").exists(), "ignored files are not copied");
        // The base commit holds that work on top of HEAD, and the worktree is clean on it.
        assert_eq!(git(&root, &["rev-parse", "refs/heads/warden/7-edit"]), made.base_commit);
        assert_eq!(git(&root, &["rev-parse", &format!("{}^", made.base_commit)]), git(&root, &["rev-parse", "HEAD"]));
        assert_eq!(git(&path, &["status", "--porcelain"]), "");
        assert_eq!(git(&path, &["show", "HEAD:new.txt"]), "untracked");
        assert_eq!(user_state(&root), before, "the user's repository changed");

        tools.remove_worktree(&repo, &path, &made.branch).await.unwrap();
        assert!(!path.exists());
        assert_eq!(git(&root, &["branch", "--list", "warden/*"]), "");
        assert_eq!(user_state(&root), before);
    }

    #[tokio::test]
    async fn a_revision_base_is_a_clean_start_and_a_leftover_attempt_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = repository(dir.path());
        let tools = Git::new(&dir.path().join("warden-git"));
        let repo = tools.locate(&root).await.unwrap().expect("a work tree");
        let path = dir.path().join("worktrees/8");
        let head = Base::Revision("HEAD".into());
        tools.create_worktree(&repo, &path, "warden/8-x", &head).await.unwrap();
        std::fs::write(path.join("half-made"), "from a crash").unwrap();
        // Made again (a crash while preparing): the leftover goes, the new one is clean.
        let made = tools.create_worktree(&repo, &path, "warden/8-x", &head).await.unwrap();
        assert_eq!(made.base_commit, git(&root, &["rev-parse", "HEAD"]));
        assert_eq!(std::fs::read_to_string(path.join("src/a.txt")).unwrap(), "one\n");
        assert!(!path.join("new.txt").exists() && !path.join("half-made").exists());
        // A worktree directory the user deleted is removed cleanly with its branch.
        std::fs::remove_dir_all(&path).unwrap();
        tools.remove_worktree(&repo, &path, "warden/8-x").await.unwrap();
        assert_eq!(git(&root, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);

        let unknown = tools.create_worktree(&repo, &path, "warden/8-y", &Base::Revision("nope".into())).await;
        assert!(unknown.unwrap_err().to_string().contains("no commit \"nope\""));
        let option = tools.create_worktree(&repo, &path, "warden/8-y", &Base::Revision("--help".into())).await;
        assert!(option.is_err());
    }

    #[tokio::test]
    async fn a_repository_without_a_commit_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("empty");
        std::fs::create_dir_all(&root).unwrap();
        git(&root, &["init", "-q"]);
        std::fs::write(root.join("f"), "x").unwrap();
        let tools = Git::new(&dir.path().join("warden-git"));
        let repo = tools.locate(&root).await.unwrap().expect("a work tree");
        let refused = tools.create_worktree(&repo, &dir.path().join("w"), "warden/1", &Base::WorkTree).await;
        assert!(refused.unwrap_err().to_string().contains("no commit yet"));
        assert!(!dir.path().join("w").exists());
    }

    #[tokio::test]
    async fn work_is_applied_onto_the_users_tree_only_when_every_file_merges() {
        let dir = tempfile::tempdir().unwrap();
        let root = repository(dir.path());
        let tools = Git::new(&dir.path().join("warden-git"));
        let repo = tools.locate(&root).await.unwrap().expect("a work tree");
        let path = dir.path().join("worktrees/9");
        let made = tools.create_worktree(&repo, &path, "warden/9", &Base::WorkTree).await.unwrap();
        // The agent's work: a line added at the end, a new file, a file removed.
        std::fs::write(path.join("src/a.txt"), "one\ntwo, not committed\nthree, the agent's\n").unwrap();
        std::fs::write(path.join("src/b.txt"), "new\n").unwrap();
        std::fs::remove_file(path.join(".gitignore")).unwrap();
        let agent = tools.locate(&path).await.unwrap().expect("the worktree");
        let theirs = tools.snapshot(&agent, "end").await.unwrap();

        // Meanwhile the user edits another file: it merges, and their edit stays.
        std::fs::write(root.join("new.txt"), "untracked, edited\n").unwrap();
        let index = std::fs::read(root.join(".git/index")).unwrap();
        let applied = tools.apply_to_work_tree(&repo, &made.base_tree, &theirs).await.unwrap();
        let Applied::Clean { mut files } = applied else { panic!("{applied:?}") };
        files.sort();
        assert_eq!(files, [".gitignore", "src/a.txt", "src/b.txt"]);
        let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap_or_default();
        assert_eq!(read("src/a.txt"), "one\ntwo, not committed\nthree, the agent's\n");
        assert_eq!((read("src/b.txt").as_str(), read("new.txt").as_str()), ("new\n", "untracked, edited\n"));
        assert!(!root.join(".gitignore").exists() && root.join("debug.log").exists());
        assert_eq!(std::fs::read(root.join(".git/index")).unwrap(), index, "the user's index changed");

        // The user changes the same line the agent did: nothing is applied.
        std::fs::write(root.join("src/a.txt"), "one\ntwo, not committed\nthree, the user's\n").unwrap();
        std::fs::write(root.join("src/b.txt"), "the user's b\n").unwrap();
        let before = (read("src/a.txt"), read("src/b.txt"), read("new.txt"));
        let refused = tools.apply_to_work_tree(&repo, &made.base_tree, &theirs).await.unwrap();
        let Applied::Conflicts { files } = refused else { panic!("{refused:?}") };
        assert!(files.contains(&"src/a.txt".to_owned()), "{files:?}");
        assert_eq!((read("src/a.txt"), read("src/b.txt"), read("new.txt")), before, "a conflict changed files");

        // A file the user changes between the snapshot and the write stops it whole.
        std::fs::write(root.join("src/a.txt"), "one\ntwo, not committed\n").unwrap();
        std::fs::remove_file(root.join("src/b.txt")).unwrap();
        let ours = tools.snapshot(&repo, "stale").await.unwrap();
        std::fs::write(root.join("new.txt"), "edited again\n").unwrap();
        let stale = tools.merge_into_work_tree(&repo, &ours, &made.base_tree, &theirs).await.unwrap();
        assert_eq!(stale, Applied::WorkTreeChanged);
        assert_eq!(read("src/a.txt"), "one\ntwo, not committed\n", "a stale apply wrote");
        assert!(!root.join("src/b.txt").exists());
    }
}
