//! The web dashboard in real headless Chromium: `tests/web/dashboard.mjs` (Playwright)
//! starts the real `warden` binary and drives the page; this test runs it so that the
//! suite's one command covers it. `make test` installs chromium and the npm packages.

use std::path::PathBuf;

use crate::helpers::*;

#[actix_web::test]
async fn the_web_dashboard_works_end_to_end_in_chromium() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `make test` (it runs `npm ci` in tests/web)"
    );
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-artifacts");
    let output = tokio::process::Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&dir)
        .env("WARDEN_BIN", warden_bin())
        .env("ARTIFACTS", &artifacts)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node runs (Node 20 is part of the base machine)");
    assert!(
        output.status.success(),
        "the web dashboard test failed (screenshots and the daemon log are in {}):\n{}\n{}",
        artifacts.display(),
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("all checks passed"), "{}", stdout(&output));
}
