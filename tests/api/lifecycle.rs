//! The daemon's own files and its graceful stop, in process.

use std::os::unix::fs::PermissionsExt;

use crate::helpers::*;

#[actix_web::test]
async fn the_data_dir_holds_token_pid_and_server_json_while_running() {
    let d = spawn_daemon().await;
    let home = d.home.clone();
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home.token_path()), 0o600);
    assert_eq!(mode(home.dir().to_path_buf()), 0o700);
    assert_eq!(std::fs::read_to_string(home.token_path()).unwrap().trim(), d.token);
    assert_eq!(d.token.len(), 64);
    assert_eq!(home.running_pid(), Some(std::process::id()));
    let info = home.read_server_info().unwrap();
    assert_eq!((info.url.as_str(), info.port, info.pid), (d.base_url.as_str(), d.port, std::process::id()));
    assert!(home.db_path().exists());

    let stopped = d.stop().await;
    let home = &stopped.home;
    assert!(!home.server_json_path().exists(), "server.json is removed on a clean exit");
    assert!(!home.pid_path().exists(), "the PID file is removed on a clean exit");
    assert_eq!(home.running_pid(), None);
}

#[actix_web::test]
async fn the_token_is_kept_across_restarts() {
    let d = spawn_daemon().await;
    let token = d.token.clone();
    let d = d.restart().await;
    assert_eq!(d.token, token);
    d.get_ok("/api/v1/status").await;
}

#[actix_web::test]
async fn a_second_daemon_on_the_same_home_is_refused() {
    let d = spawn_daemon().await;
    let config = {
        let mut c = warden::config::Config::defaults(d.home.clone());
        c.port = 0;
        c
    };
    let err = warden::daemon::Daemon::build(config).await.err().expect("second daemon refused").to_string();
    assert!(err.contains("already running"), "{err}");
    d.get_ok("/api/v1/status").await;
}
