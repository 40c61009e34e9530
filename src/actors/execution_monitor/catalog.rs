//! The ExecutionMonitor's catalog messages: workspaces, profiles and providers. Changes
//! are atomic responses: the actor handles nothing else until the write is committed, so
//! a name is never taken twice and the in-memory catalog always matches the database.

use std::future::Future;

use actix::prelude::*;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ExecutionMonitor, MonitorError, ProviderState};
use crate::domain::{
    canonical_dir, now, validate_name, NewEvent, Origin, Profile, ProfileSpec, Provider, ProviderLimits, Workspace,
    WorkspaceKey,
};
use crate::store::catalog as rows;

type Reply<T> = AtomicResponse<ExecutionMonitor, Result<T, MonitorError>>;

/// List every workspace, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Workspace>")]
pub struct ListWorkspaces;

/// One workspace by id or name.
#[derive(Message, Debug)]
#[rtype(result = "Result<Workspace, MonitorError>")]
pub struct GetWorkspace {
    pub key: WorkspaceKey,
}

/// Body of `POST /api/v1/workspaces`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    /// Unique name: letters, digits, '.', '_' or '-'.
    pub name: String,
    /// An existing directory; stored in canonical form.
    pub path: String,
}

/// Register a workspace; replies once it is committed.
#[derive(Message, Debug)]
#[rtype(result = "Result<Workspace, MonitorError>")]
pub struct CreateWorkspace {
    pub request: NewWorkspace,
}

/// Forget a workspace (its directory is not touched).
#[derive(Message, Debug)]
#[rtype(result = "Result<Workspace, MonitorError>")]
pub struct DeleteWorkspace {
    pub key: WorkspaceKey,
}

/// List every profile by name.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Profile>")]
pub struct ListProfiles;

/// One profile by name.
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, MonitorError>")]
pub struct GetProfile {
    pub name: String,
}

/// Body of `POST /api/v1/profiles`: a name and the profile's spec.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProfile {
    pub name: String,
    pub provider: String,
    pub command: Vec<String>,
    #[serde(default)]
    pub continue_command: Option<Vec<String>>,
    #[serde(default)]
    pub approval: crate::domain::ApprovalPolicy,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub sandbox: crate::domain::SandboxMode,
}

impl std::fmt::Debug for NewProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProfile").field("name", &self.name).finish_non_exhaustive()
    }
}

impl NewProfile {
    pub fn into_profile(self) -> Profile {
        Profile {
            name: self.name,
            spec: ProfileSpec {
                provider: self.provider,
                command: self.command,
                continue_command: self.continue_command,
                approval: self.approval,
                timeout_s: self.timeout_s,
                env: self.env,
                sandbox: self.sandbox,
            },
            origin: Origin::Api,
        }
    }
}

/// Add a profile over the API (stored, survives restarts).
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, MonitorError>")]
pub struct CreateProfile {
    pub request: NewProfile,
}

/// Replace an API profile's spec.
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, MonitorError>")]
pub struct UpdateProfile {
    pub name: String,
    pub spec: ProfileSpec,
}

/// Remove an API profile.
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, MonitorError>")]
pub struct DeleteProfile {
    pub name: String,
}

/// Every provider with its limits and live usage.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Provider>")]
pub struct ListProviders;

/// One provider with its limits and live usage.
#[derive(Message, Debug)]
#[rtype(result = "Result<Provider, MonitorError>")]
pub struct GetProvider {
    pub name: String,
}

/// Set a provider's limits (creating the provider if it is new); applies at once.
#[derive(Message, Debug)]
#[rtype(result = "Result<Provider, MonitorError>")]
pub struct SetProviderLimits {
    pub name: String,
    pub limits: ProviderLimits,
}

fn workspace_event(kind: &'static str, workspace: &Workspace) -> NewEvent {
    NewEvent {
        workspace: Some(workspace.name.clone()),
        ..NewEvent::new(kind, serde_json::to_value(workspace).unwrap_or_default())
    }
}

/// `profile.changed` with what happened (`created`, `updated`, `deleted`); the profile's
/// env is left out, it may hold secrets.
fn profile_event(action: &str, profile: &Profile) -> NewEvent {
    let data = serde_json::json!({
        "action": action,
        "name": profile.name,
        "provider": profile.spec.provider,
        "command": profile.spec.command,
        "approval": profile.spec.approval,
    });
    NewEvent::new("profile.changed", data)
}

impl ExecutionMonitor {
    /// Runs `write` (a commit) while the actor handles nothing else, then applies its
    /// result to the in-memory catalog; `apply` makes the reply.
    fn atomically<T: 'static, U: 'static>(
        &mut self,
        write: impl Future<Output = Result<T, MonitorError>> + 'static,
        apply: impl FnOnce(&mut ExecutionMonitor, T, &mut Context<ExecutionMonitor>) -> U + 'static,
    ) -> Reply<U> {
        AtomicResponse::new(Box::pin(
            write.into_actor(self).map(move |result, act, ctx| result.map(|value| apply(act, value, ctx))),
        ))
    }

    fn find_workspace(&self, key: &WorkspaceKey) -> Result<&Workspace, MonitorError> {
        self.workspaces.values().find(|w| key.matches(w)).ok_or_else(|| MonitorError::UnknownWorkspace(key.to_string()))
    }

    fn find_profile(&self, name: &str) -> Result<&Profile, MonitorError> {
        self.profiles.get(name).ok_or_else(|| MonitorError::UnknownProfile(name.to_owned()))
    }

    /// Only profiles made over the API may be changed over the API.
    fn mutable_profile(&self, name: &str) -> Result<&Profile, MonitorError> {
        let profile = self.find_profile(name)?;
        match profile.origin {
            Origin::Api => Ok(profile),
            Origin::Builtin => Err(MonitorError::ReadOnlyProfile { name: name.into(), origin: "built-in set" }),
            Origin::Config => Err(MonitorError::ReadOnlyProfile { name: name.into(), origin: "config file" }),
        }
    }

    pub(super) fn provider_view(&self, name: &str, state: &ProviderState) -> Provider {
        Provider {
            name: name.to_owned(),
            limits: state.queue.limits(),
            origin: state.origin,
            running: state.queue.running(),
            queued: state.queue.queued(),
            pending_approval: self
                .live
                .iter()
                .filter(|e| e.status == crate::domain::ExecutionStatus::PendingApproval && e.provider == name)
                .count() as u32,
        }
    }

    fn ensure_accepting(&self) -> Result<(), MonitorError> {
        if self.accepting {
            Ok(())
        } else {
            Err(MonitorError::ShuttingDown)
        }
    }
}

impl Handler<ListWorkspaces> for ExecutionMonitor {
    type Result = MessageResult<ListWorkspaces>;

    fn handle(&mut self, _: ListWorkspaces, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.workspaces.values().cloned().collect())
    }
}

impl Handler<GetWorkspace> for ExecutionMonitor {
    type Result = Result<Workspace, MonitorError>;

    fn handle(&mut self, msg: GetWorkspace, _: &mut Self::Context) -> Self::Result {
        self.find_workspace(&msg.key).cloned()
    }
}

impl Handler<CreateWorkspace> for ExecutionMonitor {
    type Result = Reply<Workspace>;

    fn handle(&mut self, msg: CreateWorkspace, _: &mut Self::Context) -> Self::Result {
        let NewWorkspace { name, path } = msg.request;
        let checked = self.ensure_accepting().and_then(|()| {
            validate_name("workspace", &name).map_err(MonitorError::Invalid)?;
            if name.bytes().all(|b| b.is_ascii_digit()) {
                return Err(MonitorError::Invalid(format!(
                    "workspace name {name:?} must not be all digits (it would read as an id)"
                )));
            }
            if self.workspaces.values().any(|w| w.name == name) {
                return Err(MonitorError::DuplicateWorkspace(name.clone()));
            }
            let dir = canonical_dir(&path).map_err(MonitorError::Invalid)?;
            dir.to_str()
                .map(str::to_owned)
                .ok_or_else(|| MonitorError::Invalid(format!("path {path:?} is not valid UTF-8")))
        });
        let store = self.store.clone();
        let write = async move {
            let canonical = checked?;
            let created_at = now();
            store
                .record("insert workspace", move |c, log| {
                    let workspace = rows::insert_workspace(c, &name, &canonical, created_at)?;
                    log.record(c, workspace_event("workspace.created", &workspace))?;
                    Ok(workspace)
                })
                .await
                .map_err(MonitorError::from)
        };
        self.atomically(write, |act, workspace, _| {
            tracing::info!(workspace = %workspace.name, path = %workspace.path, "workspace created");
            act.workspaces.insert(workspace.id, workspace.clone());
            workspace
        })
    }
}

impl Handler<DeleteWorkspace> for ExecutionMonitor {
    type Result = Reply<Workspace>;

    fn handle(&mut self, msg: DeleteWorkspace, _: &mut Self::Context) -> Self::Result {
        let found = self.find_workspace(&msg.key).cloned();
        let store = self.store.clone();
        let write = async move {
            let workspace = found?;
            let deleted = workspace.clone();
            store
                .record("delete workspace", move |c, log| {
                    rows::delete_workspace(c, deleted.id)?;
                    log.record(c, workspace_event("workspace.deleted", &deleted)).map(|_| ())
                })
                .await?;
            Ok(workspace)
        };
        self.atomically(write, |act, workspace, _| {
            tracing::info!(workspace = %workspace.name, "workspace deleted");
            act.workspaces.remove(&workspace.id);
            workspace
        })
    }
}

impl Handler<ListProfiles> for ExecutionMonitor {
    type Result = MessageResult<ListProfiles>;

    fn handle(&mut self, _: ListProfiles, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.profiles.values().cloned().collect())
    }
}

impl Handler<GetProfile> for ExecutionMonitor {
    type Result = Result<Profile, MonitorError>;

    fn handle(&mut self, msg: GetProfile, _: &mut Self::Context) -> Self::Result {
        self.find_profile(&msg.name).cloned()
    }
}

impl Handler<CreateProfile> for ExecutionMonitor {
    type Result = Reply<Profile>;

    fn handle(&mut self, msg: CreateProfile, _: &mut Self::Context) -> Self::Result {
        let profile = msg.request.into_profile();
        let checked = validate_name("profile", &profile.name)
            .and_then(|()| profile.spec.validate())
            .map_err(MonitorError::Invalid)
            .and_then(|()| match self.profiles.contains_key(&profile.name) {
                true => Err(MonitorError::DuplicateProfile(profile.name.clone())),
                false => Ok(profile),
            });
        let store = self.store.clone();
        let write = async move {
            let profile = checked?;
            let stored = profile.clone();
            store
                .record("insert profile", move |c, log| {
                    rows::upsert_profile(c, &stored, now())?;
                    log.record(c, profile_event("created", &stored)).map(|_| ())
                })
                .await?;
            Ok(profile)
        };
        self.atomically(write, |act, profile, _| act.install_profile(profile))
    }
}

impl Handler<UpdateProfile> for ExecutionMonitor {
    type Result = Reply<Profile>;

    fn handle(&mut self, msg: UpdateProfile, _: &mut Self::Context) -> Self::Result {
        let checked = self.mutable_profile(&msg.name).and_then(|current| {
            msg.spec.validate().map_err(MonitorError::Invalid)?;
            Ok(Profile { name: current.name.clone(), spec: msg.spec, origin: Origin::Api })
        });
        let store = self.store.clone();
        let write = async move {
            let profile = checked?;
            let stored = profile.clone();
            store
                .record("update profile", move |c, log| {
                    rows::upsert_profile(c, &stored, now())?;
                    log.record(c, profile_event("updated", &stored)).map(|_| ())
                })
                .await?;
            Ok(profile)
        };
        self.atomically(write, |act, profile, _| act.install_profile(profile))
    }
}

impl Handler<DeleteProfile> for ExecutionMonitor {
    type Result = Reply<Profile>;

    fn handle(&mut self, msg: DeleteProfile, _: &mut Self::Context) -> Self::Result {
        let checked = self.mutable_profile(&msg.name).cloned();
        let store = self.store.clone();
        let write = async move {
            let profile = checked?;
            let deleted = profile.clone();
            store
                .record("delete profile", move |c, log| {
                    rows::delete_profile(c, &deleted.name)?;
                    log.record(c, profile_event("deleted", &deleted)).map(|_| ())
                })
                .await?;
            Ok(profile)
        };
        self.atomically(write, |act, profile, _| {
            tracing::info!(profile = %profile.name, "profile deleted");
            act.profiles.remove(&profile.name);
            profile
        })
    }
}

impl ExecutionMonitor {
    /// Puts a committed profile in the catalog; a provider it names for the first time
    /// gets the default limits.
    fn install_profile(&mut self, profile: Profile) -> Profile {
        tracing::info!(profile = %profile.name, provider = %profile.spec.provider, "profile saved");
        self.providers
            .entry(profile.spec.provider.clone())
            .or_insert_with(|| ProviderState::new(ProviderLimits::default(), Origin::Api));
        self.profiles.insert(profile.name.clone(), profile.clone());
        profile
    }
}

impl Handler<ListProviders> for ExecutionMonitor {
    type Result = MessageResult<ListProviders>;

    fn handle(&mut self, _: ListProviders, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.providers.iter().map(|(name, state)| self.provider_view(name, state)).collect())
    }
}

impl Handler<GetProvider> for ExecutionMonitor {
    type Result = Result<Provider, MonitorError>;

    fn handle(&mut self, msg: GetProvider, _: &mut Self::Context) -> Self::Result {
        self.providers
            .get(&msg.name)
            .map(|state| self.provider_view(&msg.name, state))
            .ok_or(MonitorError::UnknownProvider(msg.name))
    }
}

impl Handler<SetProviderLimits> for ExecutionMonitor {
    type Result = Reply<Provider>;

    fn handle(&mut self, msg: SetProviderLimits, _: &mut Self::Context) -> Self::Result {
        let SetProviderLimits { name, limits } = msg;
        let checked = validate_name("provider", &name).and_then(|()| limits.validate()).map_err(MonitorError::Invalid);
        let store = self.store.clone();
        let write = async move {
            checked?;
            let stored = name.clone();
            store
                .record("set provider limits", move |c, log| {
                    rows::upsert_provider(c, &stored, limits, now())?;
                    let data = serde_json::json!({ "name": stored, "max_concurrent": limits.max_concurrent, "rate_per_minute": limits.rate_per_minute });
                    log.record(c, NewEvent::new("provider.changed", data)).map(|_| ())
                })
                .await?;
            Ok((name, limits))
        };
        self.atomically(write, |act, (name, limits), ctx| {
            tracing::info!(provider = %name, max_concurrent = limits.max_concurrent, rate_per_minute = limits.rate_per_minute, "provider limits set");
            let state = act.provider_mut(&name);
            state.origin = Origin::Api;
            state.queue.set_limits(limits, std::time::Instant::now());
            // Changed limits apply to the queue at once.
            act.try_start(&name, ctx);
            let state = &act.providers[&name];
            act.provider_view(&name, state)
        })
    }
}
