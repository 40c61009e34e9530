//! `Catalog` owns where executions may run and how: the workspaces and the profiles
//! (built-in, config-file and API ones). HTTP handlers and the SessionKeeper send it
//! messages; changes are atomic responses, so the actor handles nothing else until the
//! write is committed, a name is never taken twice and the catalog always matches the
//! database. It publishes what it holds as a [`CatalogView`], which the ExecutionMonitor
//! reads when it checks a request and when it spawns a process: a catalog commit never
//! holds up process exits, cancels and starts. Provider limits live with the queues, in
//! the monitor.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use actix::prelude::*;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::{
    canonical_dir, now, validate_name, NewEvent, Origin, Profile, ProfileSpec, Workspace, WorkspaceId, WorkspaceKey,
};
use crate::store::catalog as rows;
use crate::store::{Store, StoreError};

type Reply<T> = AtomicResponse<Catalog, Result<T, CatalogError>>;

/// What can go wrong with a request to the Catalog (or a request the catalog checks).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no workspace {0:?}")]
    UnknownWorkspace(String),
    #[error("no profile {0:?}")]
    UnknownProfile(String),
    #[error("a workspace named {0:?} exists already")]
    DuplicateWorkspace(String),
    #[error("a profile named {0:?} exists already")]
    DuplicateProfile(String),
    #[error("profile {name:?} comes from the {origin} and cannot be changed over the API")]
    ReadOnlyProfile { name: String, origin: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("warden is shutting down and accepts no new work")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The workspaces and profiles as they are now.
#[derive(Debug, Default)]
pub struct CatalogData {
    /// Every workspace by id; the database holds the same rows.
    pub workspaces: BTreeMap<WorkspaceId, Workspace>,
    /// Built-in, config-file and API profiles by name (API ones are also stored).
    pub profiles: BTreeMap<String, Profile>,
    /// Agents never run here (warden's data dir, which the sandbox hides from them).
    protected: PathBuf,
    /// The ready agent profiles the config file left as they are: an API profile of the
    /// same name replaces one, and deleting it brings the ready one back.
    ready: BTreeMap<String, Profile>,
}

/// A checked place to run: the profile, the workspace's name (if any), the cwd.
#[derive(Debug, Clone)]
pub struct Target {
    pub profile: Profile,
    pub workspace: Option<String>,
    pub cwd: String,
}

impl CatalogData {
    /// The profile, workspace and cwd a request names, checked: the profile (default
    /// `shell`) exists, exactly one of workspace and cwd is given, the workspace exists
    /// or the cwd is a directory outside the data dir.
    pub fn resolve(
        &self,
        profile: Option<&str>,
        workspace: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<Target, CatalogError> {
        let profile_name = profile.unwrap_or("shell");
        let profile = self.find_profile(profile_name)?.clone();
        let (workspace, cwd) = match (workspace, cwd) {
            (Some(key), None) => {
                let found = self.find_workspace(&WorkspaceKey::parse(key))?;
                (Some(found.name.clone()), found.path.clone())
            }
            (None, Some(cwd)) => {
                let dir = canonical_dir(cwd).map_err(|e| CatalogError::Invalid(format!("cwd: {e}")))?;
                self.refuse_data_dir(&dir)?;
                (None, dir.to_string_lossy().into_owned())
            }
            _ => return Err(CatalogError::Invalid("give exactly one of workspace and cwd".into())),
        };
        Ok(Target { profile, workspace, cwd })
    }

    fn find_workspace(&self, key: &WorkspaceKey) -> Result<&Workspace, CatalogError> {
        self.workspaces.values().find(|w| key.matches(w)).ok_or_else(|| CatalogError::UnknownWorkspace(key.to_string()))
    }

    fn find_profile(&self, name: &str) -> Result<&Profile, CatalogError> {
        self.profiles.get(name).ok_or_else(|| CatalogError::UnknownProfile(name.to_owned()))
    }

    /// Only profiles made over the API may be changed over the API.
    fn mutable_profile(&self, name: &str) -> Result<&Profile, CatalogError> {
        let profile = self.find_profile(name)?;
        match profile.origin {
            Origin::Api => Ok(profile),
            Origin::Builtin => Err(CatalogError::ReadOnlyProfile { name: name.into(), origin: "built-in set" }),
            Origin::Config => Err(CatalogError::ReadOnlyProfile { name: name.into(), origin: "config file" }),
        }
    }

    /// Agents never run in warden's data dir: the sandbox hides it from them.
    fn refuse_data_dir(&self, dir: &Path) -> Result<(), CatalogError> {
        if dir.starts_with(&self.protected) {
            return Err(CatalogError::Invalid(format!(
                "{} is inside warden's data dir, where no agent may run",
                dir.display()
            )));
        }
        Ok(())
    }
}

/// The catalog for reading, shared with the ExecutionMonitor; only the Catalog writes
/// it, in its handlers, after each commit.
#[derive(Clone, Debug, Default)]
pub struct CatalogView(Arc<RwLock<CatalogData>>);

impl CatalogView {
    pub fn read(&self) -> RwLockReadGuard<'_, CatalogData> {
        // A panic while holding the lock cannot leave the maps half-changed (each
        // change is one insert or remove), so a poisoned lock is still readable.
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn change<T>(&self, change: impl FnOnce(&mut CatalogData) -> T) -> T {
        change(&mut self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

/// What the Catalog starts from: the config's profiles and what the database holds.
pub struct CatalogSeed {
    pub config_profiles: BTreeMap<String, Profile>,
    pub workspaces: Vec<Workspace>,
    pub api_profiles: Vec<Profile>,
}

/// The actor.
pub struct Catalog {
    store: Store,
    view: CatalogView,
    /// False once shutdown began: no new workspace is registered.
    accepting: bool,
}

impl Catalog {
    /// `protected` is the data dir, where no workspace or cwd may be.
    pub fn new(store: Store, protected: PathBuf, seed: CatalogSeed) -> Self {
        let mut profiles = seed.config_profiles;
        let ready: BTreeMap<String, Profile> = crate::agent::profiles::ready_profiles()
            .into_iter()
            .filter(|ready| profiles.get(&ready.name) == Some(ready))
            .map(|ready| (ready.name.clone(), ready))
            .collect();
        for profile in seed.api_profiles {
            // A config-file profile of the same name wins: the file is the user's word.
            if profiles.contains_key(&profile.name) && !ready.contains_key(&profile.name) {
                tracing::warn!(profile = %profile.name, "stored API profile is shadowed by the config file");
                continue;
            }
            profiles.insert(profile.name.clone(), profile);
        }
        let workspaces = seed.workspaces.into_iter().map(|w| (w.id, w)).collect();
        let view = CatalogView(Arc::new(RwLock::new(CatalogData { workspaces, profiles, protected, ready })));
        Catalog { store, view, accepting: true }
    }

    /// The catalog for reading (the ExecutionMonitor's copy).
    pub fn view(&self) -> CatalogView {
        self.view.clone()
    }
}

impl Actor for Catalog {
    type Context = Context<Self>;
}

/// Shutdown began: no new workspace is registered.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct StopCataloguing;

impl Handler<StopCataloguing> for Catalog {
    type Result = ();

    fn handle(&mut self, _: StopCataloguing, _: &mut Self::Context) {
        self.accepting = false;
    }
}

/// Where a session's executions and their places are checked before the session exists.
#[derive(Message, Debug)]
#[rtype(result = "Result<Target, CatalogError>")]
pub struct ResolveTarget {
    pub profile: Option<String>,
    pub workspace: Option<String>,
    pub cwd: Option<String>,
}

impl Handler<ResolveTarget> for Catalog {
    type Result = Result<Target, CatalogError>;

    fn handle(&mut self, msg: ResolveTarget, _: &mut Self::Context) -> Self::Result {
        self.view.read().resolve(msg.profile.as_deref(), msg.workspace.as_deref(), msg.cwd.as_deref())
    }
}

/// List every workspace, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Workspace>")]
pub struct ListWorkspaces;

/// One workspace by id or name.
#[derive(Message, Debug)]
#[rtype(result = "Result<Workspace, CatalogError>")]
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
#[rtype(result = "Result<Workspace, CatalogError>")]
pub struct CreateWorkspace {
    pub request: NewWorkspace,
}

/// Forget a workspace (its directory is not touched).
#[derive(Message, Debug)]
#[rtype(result = "Result<Workspace, CatalogError>")]
pub struct DeleteWorkspace {
    pub key: WorkspaceKey,
}

/// List every profile by name.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Profile>")]
pub struct ListProfiles;

/// One profile by name.
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, CatalogError>")]
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
    #[serde(default)]
    pub isolation: crate::domain::Isolation,
    #[serde(default)]
    pub format: crate::domain::AgentFormat,
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
                isolation: self.isolation,
                format: self.format,
            },
            origin: Origin::Api,
        }
    }
}

/// Add a profile over the API (stored, survives restarts).
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, CatalogError>")]
pub struct CreateProfile {
    pub request: NewProfile,
}

/// Replace an API profile's spec.
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, CatalogError>")]
pub struct UpdateProfile {
    pub name: String,
    pub spec: ProfileSpec,
}

/// Remove an API profile.
#[derive(Message, Debug)]
#[rtype(result = "Result<Profile, CatalogError>")]
pub struct DeleteProfile {
    pub name: String,
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

impl Catalog {
    /// Runs `write` (a commit) while the actor handles nothing else, then applies its
    /// result to the catalog; `apply` makes the reply.
    fn atomically<T: 'static, U: 'static>(
        &mut self,
        write: impl Future<Output = Result<T, CatalogError>> + 'static,
        apply: impl FnOnce(&mut CatalogData, T) -> U + 'static,
    ) -> Reply<U> {
        AtomicResponse::new(Box::pin(
            write
                .into_actor(self)
                .map(move |result, act, _| result.map(|value| act.view.change(|data| apply(data, value)))),
        ))
    }

    fn ensure_accepting(&self) -> Result<(), CatalogError> {
        if self.accepting {
            Ok(())
        } else {
            Err(CatalogError::ShuttingDown)
        }
    }
}

impl Handler<ListWorkspaces> for Catalog {
    type Result = MessageResult<ListWorkspaces>;

    fn handle(&mut self, _: ListWorkspaces, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.view.read().workspaces.values().cloned().collect())
    }
}

impl Handler<GetWorkspace> for Catalog {
    type Result = Result<Workspace, CatalogError>;

    fn handle(&mut self, msg: GetWorkspace, _: &mut Self::Context) -> Self::Result {
        self.view.read().find_workspace(&msg.key).cloned()
    }
}

impl Handler<CreateWorkspace> for Catalog {
    type Result = Reply<Workspace>;

    fn handle(&mut self, msg: CreateWorkspace, _: &mut Self::Context) -> Self::Result {
        let NewWorkspace { name, path } = msg.request;
        let checked = self.ensure_accepting().and_then(|()| {
            let catalog = self.view.read();
            validate_name("workspace", &name).map_err(CatalogError::Invalid)?;
            if name.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CatalogError::Invalid(format!(
                    "workspace name {name:?} must not be all digits (it would read as an id)"
                )));
            }
            if catalog.workspaces.values().any(|w| w.name == name) {
                return Err(CatalogError::DuplicateWorkspace(name.clone()));
            }
            let dir = canonical_dir(&path).map_err(CatalogError::Invalid)?;
            dir.to_str()
                .map(str::to_owned)
                .ok_or_else(|| CatalogError::Invalid(format!("path {path:?} is not valid UTF-8")))
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
                .map_err(CatalogError::from)
        };
        self.atomically(write, |catalog, workspace| {
            tracing::info!(workspace = %workspace.name, path = %workspace.path, "workspace created");
            catalog.workspaces.insert(workspace.id, workspace.clone());
            workspace
        })
    }
}

impl Handler<DeleteWorkspace> for Catalog {
    type Result = Reply<Workspace>;

    fn handle(&mut self, msg: DeleteWorkspace, _: &mut Self::Context) -> Self::Result {
        let found = self.view.read().find_workspace(&msg.key).cloned();
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
        self.atomically(write, |catalog, workspace| {
            tracing::info!(workspace = %workspace.name, "workspace deleted");
            catalog.workspaces.remove(&workspace.id);
            workspace
        })
    }
}

impl Handler<ListProfiles> for Catalog {
    type Result = MessageResult<ListProfiles>;

    fn handle(&mut self, _: ListProfiles, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.view.read().profiles.values().cloned().collect())
    }
}

impl Handler<GetProfile> for Catalog {
    type Result = Result<Profile, CatalogError>;

    fn handle(&mut self, msg: GetProfile, _: &mut Self::Context) -> Self::Result {
        self.view.read().find_profile(&msg.name).cloned()
    }
}

impl Handler<CreateProfile> for Catalog {
    type Result = Reply<Profile>;

    fn handle(&mut self, msg: CreateProfile, _: &mut Self::Context) -> Self::Result {
        let profile = msg.request.into_profile();
        let checked = validate_name("profile", &profile.name)
            .and_then(|()| profile.spec.validate())
            .map_err(CatalogError::Invalid)
            .and_then(|()| {
                let catalog = self.view.read();
                match catalog.profiles.get(&profile.name) {
                    // A ready profile is there to be replaced.
                    Some(existing) if catalog.ready.get(&profile.name) != Some(existing) => {
                        Err(CatalogError::DuplicateProfile(profile.name.clone()))
                    }
                    _ => Ok(profile),
                }
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
        self.atomically(write, |catalog, profile| catalog.install_profile(profile))
    }
}

impl Handler<UpdateProfile> for Catalog {
    type Result = Reply<Profile>;

    fn handle(&mut self, msg: UpdateProfile, _: &mut Self::Context) -> Self::Result {
        let checked = self.view.read().mutable_profile(&msg.name).and_then(|current| {
            msg.spec.validate().map_err(CatalogError::Invalid)?;
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
        self.atomically(write, |catalog, profile| catalog.install_profile(profile))
    }
}

impl Handler<DeleteProfile> for Catalog {
    type Result = Reply<Profile>;

    fn handle(&mut self, msg: DeleteProfile, _: &mut Self::Context) -> Self::Result {
        let checked = self.view.read().mutable_profile(&msg.name).cloned();
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
        self.atomically(write, |catalog, profile| {
            tracing::info!(profile = %profile.name, "profile deleted");
            match catalog.ready.get(&profile.name) {
                Some(ready) => catalog.profiles.insert(profile.name.clone(), ready.clone()),
                None => catalog.profiles.remove(&profile.name),
            };
            profile
        })
    }
}

impl CatalogData {
    /// Puts a committed profile in the catalog (a provider it names for the first time
    /// is the monitor's to add, with the default limits).
    fn install_profile(&mut self, profile: Profile) -> Profile {
        tracing::info!(profile = %profile.name, provider = %profile.spec.provider, "profile saved");
        self.profiles.insert(profile.name.clone(), profile.clone());
        profile
    }
}
