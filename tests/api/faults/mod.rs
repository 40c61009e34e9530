//! Faults survived, each against the real `warden serve` in a process of its own, one
//! file per kind: the disk and the database (`storage`), kill -9 at random moments
//! (`crashes`), agents that flood, fork or close their output (`agents`), and clients
//! that churn (`clients`).

mod agents;
mod clients;
mod crashes;
mod storage;

use crate::helpers::*;

/// The names of the workspaces a daemon lists.
async fn workspace_names(api: &Api) -> Vec<String> {
    let page = api.get_ok("/api/v1/workspaces").await;
    page["items"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap().to_owned()).collect()
}
