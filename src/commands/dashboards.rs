//! `warden dash` and `warden open`: the terminal dashboard, and the web dashboard's URL.

use super::{Outcome, Remote};

pub async fn terminal(remote: &Remote) -> anyhow::Result<Outcome> {
    let client = remote.client()?.named("warden-dash");
    client.health().await?;
    let token = client.token().to_owned();
    crate::dash::run(client, token).await?;
    Ok(Outcome::Done)
}

/// Prints the URL; opens it with `xdg-open` (or `open`) when there is one.
pub fn open(remote: &Remote, no_browser: bool) -> anyhow::Result<Outcome> {
    let url = remote.client()?.dashboard_url();
    println!("{url}");
    if no_browser {
        return Ok(Outcome::Done);
    }
    for opener in ["xdg-open", "open"] {
        let spawned = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if spawned.is_ok() {
            return Ok(Outcome::Done);
        }
    }
    eprintln!("warden: no browser opener (xdg-open) found; open the URL above yourself");
    Ok(Outcome::Done)
}
