//! `/api/v1/profiles` and `/api/v1/providers`: thin handlers over the Catalog's
//! profile messages and the ExecutionMonitor's provider messages. Profiles are shown as
//! [`ProfileView`]s: their env by names only.

use actix::Addr;
use actix_web::{web, HttpResponse};

use super::pagination::{NameCursor, NamePageQuery, Page, PageQuery};
use super::problem::{ApiError, Problem};
use crate::actors::catalog::{
    Catalog, CreateProfile, DeleteProfile, GetProfile, ListProfiles, NewProfile, UpdateProfile,
};
use crate::actors::execution_monitor::{ExecutionMonitor, GetProvider, ListProviders, SetProviderLimits};
use crate::domain::{ProfileSpec, ProfileView, Provider, ProviderLimits};

type Monitor = web::Data<Addr<ExecutionMonitor>>;
type CatalogAddr = web::Data<Addr<Catalog>>;

/// Every profile: built-in, from the config file, and made over the API.
#[utoipa::path(get, path = "/api/v1/profiles", operation_id = "listProfiles", tag = "profiles", params(NamePageQuery),
    responses((status = 200, body = Page<ProfileView>), (status = 400, body = Problem)))]
pub async fn list(catalog: CatalogAddr, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let profiles = catalog.send(ListProfiles).await?;
    Ok(HttpResponse::Ok().json(Page::of_sorted(
        profiles.iter().map(ProfileView::from).collect(),
        |p| NameCursor(p.name.clone()),
        &query,
    )?))
}

/// One profile.
#[utoipa::path(get, path = "/api/v1/profiles/{name}", operation_id = "getProfile", tag = "profiles",
    params(("name" = String, Path)),
    responses((status = 200, body = ProfileView), (status = 404, body = Problem)))]
pub async fn get(catalog: CatalogAddr, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let profile = catalog.send(GetProfile { name: name.into_inner() }).await??;
    Ok(HttpResponse::Ok().json(ProfileView::from(&profile)))
}

/// Add a profile (stored; survives restarts).
#[utoipa::path(post, path = "/api/v1/profiles", operation_id = "createProfile", tag = "profiles", request_body = NewProfile,
    responses((status = 201, body = ProfileView), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(catalog: CatalogAddr, body: web::Json<NewProfile>) -> Result<HttpResponse, ApiError> {
    let profile = catalog.send(CreateProfile { request: body.into_inner() }).await??;
    Ok(HttpResponse::Created().json(ProfileView::from(&profile)))
}

/// Replace a profile made over the API (config-file and built-in ones are read-only).
#[utoipa::path(put, path = "/api/v1/profiles/{name}", operation_id = "updateProfile", tag = "profiles", request_body = ProfileSpec,
    params(("name" = String, Path)),
    responses((status = 200, body = ProfileView), (status = 404, body = Problem),
              (status = 409, description = "read-only profile", body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    catalog: CatalogAddr,
    name: web::Path<String>,
    body: web::Json<ProfileSpec>,
) -> Result<HttpResponse, ApiError> {
    let profile = catalog.send(UpdateProfile { name: name.into_inner(), spec: body.into_inner() }).await??;
    Ok(HttpResponse::Ok().json(ProfileView::from(&profile)))
}

/// Remove a profile made over the API.
#[utoipa::path(delete, path = "/api/v1/profiles/{name}", operation_id = "deleteProfile", tag = "profiles",
    params(("name" = String, Path)),
    responses((status = 200, description = "the deleted profile", body = ProfileView), (status = 404, body = Problem),
              (status = 409, description = "read-only profile", body = Problem)))]
pub async fn remove(catalog: CatalogAddr, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let profile = catalog.send(DeleteProfile { name: name.into_inner() }).await??;
    Ok(HttpResponse::Ok().json(ProfileView::from(&profile)))
}

/// Every provider with its limits and live `running`/`queued` counts.
#[utoipa::path(get, path = "/api/v1/providers", operation_id = "listProviders", tag = "providers", params(NamePageQuery),
    responses((status = 200, body = Page<Provider>), (status = 400, body = Problem)))]
pub async fn list_providers(monitor: Monitor, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let providers = monitor.send(ListProviders).await?;
    Ok(HttpResponse::Ok().json(Page::of_sorted(providers, |p| NameCursor(p.name.clone()), &query)?))
}

/// One provider.
#[utoipa::path(get, path = "/api/v1/providers/{name}", operation_id = "getProvider", tag = "providers",
    params(("name" = String, Path)),
    responses((status = 200, body = Provider), (status = 404, body = Problem)))]
pub async fn get_provider(monitor: Monitor, name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let provider = monitor.send(GetProvider { name: name.into_inner() }).await??;
    Ok(HttpResponse::Ok().json(provider))
}

/// Set a provider's limits (creates the provider if new); queues follow at once.
#[utoipa::path(put, path = "/api/v1/providers/{name}", operation_id = "setProviderLimits", tag = "providers", request_body = ProviderLimits,
    params(("name" = String, Path)),
    responses((status = 200, body = Provider), (status = 422, body = Problem)))]
pub async fn set_provider(
    monitor: Monitor,
    name: web::Path<String>,
    body: web::Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<HttpResponse, ApiError> {
    // Read from an object only: every field has a default, so serde would also take `[]`.
    let limits: ProviderLimits = serde_json::from_value(serde_json::Value::Object(body.into_inner()))
        .map_err(|e| ApiError::unprocessable(format!("invalid body: {e}")))?;
    let provider = monitor.send(SetProviderLimits { name: name.into_inner(), limits }).await??;
    Ok(HttpResponse::Ok().json(provider))
}
