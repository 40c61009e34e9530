//! `/api/v1/workspaces`: thin handlers over the Catalog's workspace messages.

use actix::Addr;
use actix_web::{web, HttpResponse};

use super::pagination::{Page, PageQuery};
use super::problem::{ApiError, Problem};
use crate::actors::catalog::{Catalog, CreateWorkspace, DeleteWorkspace, GetWorkspace, ListWorkspaces, NewWorkspace};
use crate::domain::{Workspace, WorkspaceKey};

type CatalogAddr = web::Data<Addr<Catalog>>;

/// Every workspace, oldest first.
#[utoipa::path(get, path = "/api/v1/workspaces", operation_id = "listWorkspaces", tag = "workspaces", params(PageQuery),
    responses((status = 200, body = Page<Workspace>), (status = 400, body = Problem)))]
pub async fn list(catalog: CatalogAddr, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let workspaces = catalog.send(ListWorkspaces).await?;
    Ok(HttpResponse::Ok().json(Page::of_sorted(workspaces, |w| w.id.0, &query)?))
}

/// Register a directory as a workspace.
#[utoipa::path(post, path = "/api/v1/workspaces", operation_id = "createWorkspace", tag = "workspaces", request_body = NewWorkspace,
    responses((status = 201, body = Workspace), (status = 400, body = Problem),
              (status = 409, description = "name taken", body = Problem),
              (status = 422, description = "bad name or path", body = Problem)))]
pub async fn create(catalog: CatalogAddr, body: web::Json<NewWorkspace>) -> Result<HttpResponse, ApiError> {
    let workspace = catalog.send(CreateWorkspace { request: body.into_inner() }).await??;
    Ok(HttpResponse::Created().json(workspace))
}

/// One workspace, by id or name.
#[utoipa::path(get, path = "/api/v1/workspaces/{workspace}", operation_id = "getWorkspace", tag = "workspaces",
    params(("workspace" = String, Path, description = "id or name")),
    responses((status = 200, body = Workspace), (status = 404, body = Problem)))]
pub async fn get(catalog: CatalogAddr, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let workspace = catalog.send(GetWorkspace { key: WorkspaceKey::parse(&key) }).await??;
    Ok(HttpResponse::Ok().json(workspace))
}

/// Forget a workspace; its directory is left alone.
#[utoipa::path(delete, path = "/api/v1/workspaces/{workspace}", operation_id = "deleteWorkspace", tag = "workspaces",
    params(("workspace" = String, Path, description = "id or name")),
    responses((status = 200, description = "the deleted workspace", body = Workspace), (status = 404, body = Problem)))]
pub async fn remove(catalog: CatalogAddr, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let workspace = catalog.send(DeleteWorkspace { key: WorkspaceKey::parse(&key) }).await??;
    Ok(HttpResponse::Ok().json(workspace))
}
