//! For the git-level tests of the ChangeTracker's modules: git run as a user would.

use std::path::Path;

/// Runs git in `dir` as a user with no global config (on `main`, as `t`), without taking
/// optional locks (so that looking never refreshes an index whose bytes are compared);
/// its output, trimmed. Panics when git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
