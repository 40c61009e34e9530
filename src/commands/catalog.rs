//! `warden workspace|profile|provider …`: client commands over the catalog routes.

use serde_json::{json, Value};

use super::{absolute_path, all_pages, print_json, print_table, Outcome, Remote};
use crate::cli::{ProfileCommand, ProviderCommand, WorkspaceCommand};
use crate::domain::Word;
use crate::domain::{ProfileView, Provider, Workspace};

pub async fn workspace(remote: &Remote, command: WorkspaceCommand) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    match command {
        WorkspaceCommand::Add { name, path, json } => {
            let path = absolute_path(path)?;
            let body = json!({ "name": name, "path": path.to_string_lossy() });
            let workspace: Workspace = client.post("/api/v1/workspaces", &body).await?;
            if json {
                print_json(&workspace)?;
            } else {
                println!("workspace {} ({}) added: {}", workspace.name, workspace.id, workspace.path);
            }
        }
        WorkspaceCommand::Ls { json } => {
            let workspaces: Vec<Workspace> = all_pages(&client, "/api/v1/workspaces").await?;
            if json {
                print_json(&workspaces)?;
            } else {
                let rows: Vec<Vec<String>> =
                    workspaces.iter().map(|w| vec![w.id.to_string(), w.name.clone(), w.path.clone()]).collect();
                print_table(&["id", "name", "path"], &rows);
            }
        }
        WorkspaceCommand::Rm { name, json } => {
            let workspace: Workspace = client.delete(&format!("/api/v1/workspaces/{}", encode(&name))).await?;
            if json {
                print_json(&workspace)?;
            } else {
                println!("workspace {} removed (its directory {} is untouched)", workspace.name, workspace.path);
            }
        }
    }
    Ok(Outcome::Done)
}

pub async fn profile(remote: &Remote, command: ProfileCommand) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    match command {
        ProfileCommand::Ls { json } => {
            let profiles: Vec<ProfileView> = all_pages(&client, "/api/v1/profiles").await?;
            if json {
                print_json(&profiles)?;
            } else {
                let rows: Vec<Vec<String>> = profiles
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.provider.clone(),
                            p.format.as_str().to_owned(),
                            if p.installed { "yes" } else { "no" }.to_owned(),
                            p.approval.as_str().to_owned(),
                            shown_sandbox(p.sandbox.into()).to_owned(),
                            format!("{:?}", p.origin).to_lowercase(),
                            p.command.join(" "),
                        ]
                    })
                    .collect();
                print_table(
                    &["name", "provider", "format", "installed", "approval", "sandbox", "origin", "command"],
                    &rows,
                );
            }
        }
        ProfileCommand::Show { name, json } => {
            let profile: Value = client.get(&format!("/api/v1/profiles/{}", encode(&name))).await?;
            if json {
                print_json(&profile)?;
            } else {
                println!("{}", serde_json::to_string_pretty(&profile)?);
            }
        }
    }
    Ok(Outcome::Done)
}

/// A sandbox as the CLI shows it: `off` is said plainly.
pub fn shown_sandbox(sandbox: crate::domain::SandboxApplied) -> &'static str {
    match sandbox {
        crate::domain::SandboxApplied::Off => "unsandboxed",
        crate::domain::SandboxApplied::Unavailable => "unsandboxed (no Landlock)",
        other => other.as_str(),
    }
}

pub async fn provider(remote: &Remote, command: ProviderCommand) -> anyhow::Result<Outcome> {
    let client = remote.client()?;
    match command {
        ProviderCommand::Ls { json } => {
            let providers: Vec<Provider> = all_pages(&client, "/api/v1/providers").await?;
            if json {
                print_json(&providers)?;
            } else {
                let rows: Vec<Vec<String>> = providers
                    .iter()
                    .map(|p| {
                        let budget = match (p.limits.max_cost_usd_per_day, p.limits.max_tokens_per_day) {
                            (None, None) => "-".to_owned(),
                            (cost, tokens) => [cost.map(|c| format!("${c:.2}")), tokens.map(|t| format!("{t} tokens"))]
                                .into_iter()
                                .flatten()
                                .collect::<Vec<_>>()
                                .join(" / "),
                        };
                        let spend = &p.spend_today;
                        vec![
                            p.name.clone(),
                            limit(p.limits.max_concurrent),
                            limit(p.limits.rate_per_minute),
                            p.running.to_string(),
                            p.queued.to_string(),
                            format!("${:.4} {}+{} tokens", spend.cost_usd, spend.input_tokens, spend.output_tokens),
                            if p.budget_reached { format!("{budget} REACHED") } else { budget },
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "name",
                        "max_concurrent",
                        "rate_per_minute",
                        "running",
                        "queued",
                        "spend_today",
                        "budget_per_day",
                    ],
                    &rows,
                );
            }
        }
        ProviderCommand::Set {
            name,
            max_concurrent,
            rate_per_minute,
            max_cost_usd_per_day,
            max_tokens_per_day,
            json,
        } => {
            let path = format!("/api/v1/providers/{}", encode(&name));
            let current = match client.get::<Provider>(&path).await {
                Ok(provider) => provider.limits,
                Err(e) if e.code() == Some("not_found") => Default::default(),
                Err(e) => return Err(e.into()),
            };
            let body = json!({
                "max_concurrent": max_concurrent.unwrap_or(current.max_concurrent),
                "rate_per_minute": rate_per_minute.unwrap_or(current.rate_per_minute),
                "max_cost_usd_per_day": max_cost_usd_per_day.map_or(current.max_cost_usd_per_day, |b| b.0),
                "max_tokens_per_day": max_tokens_per_day.map_or(current.max_tokens_per_day, |b| b.0),
            });
            let provider: Provider = client.put(&path, &body).await?;
            if json {
                print_json(&provider)?;
            } else {
                println!(
                    "provider {}: max_concurrent {}, rate_per_minute {}",
                    provider.name,
                    limit(provider.limits.max_concurrent),
                    limit(provider.limits.rate_per_minute)
                );
            }
        }
    }
    Ok(Outcome::Done)
}

fn limit(n: u32) -> String {
    if n == 0 {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    serde_urlencoded::to_string([("", segment)]).map(|s| s[1..].to_owned()).unwrap_or_default()
}
