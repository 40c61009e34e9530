//! `/api/v1/sessions`: thin handlers over the SessionKeeper; reads come from the store.

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::pagination::{Page, PageQuery};
use super::problem::{ApiError, Problem};
use crate::actors::session_keeper::{CloseSession, CreateSession, RenameSession, SendMessage, Sent, SessionKeeper};
use crate::domain::optional_word;
use crate::domain::{NewMessage, NewSession, Session, SessionId, SessionMessage, SessionPatch, SessionStatus};
use crate::store::idempotency::Claim;
use crate::store::{sessions as rows, Store};

type Keeper = web::Data<Addr<SessionKeeper>>;

/// `GET /api/v1/sessions` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this status.
    #[serde(default, deserialize_with = "optional_word")]
    #[param(value_type = Option<SessionStatus>)]
    pub status: Option<SessionStatus>,
    /// Workspace name.
    pub workspace: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[param(value_type = Option<i64>)]
    pub cursor: Option<String>,
}

/// Start a conversation with a profile in a workspace or directory.
#[utoipa::path(post, path = "/api/v1/sessions", operation_id = "createSession", tag = "sessions", request_body = NewSession,
    responses((status = 201, body = Session), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    keeper: Keeper,
    claim: Option<web::ReqData<Claim>>,
    body: web::Json<NewSession>,
) -> Result<HttpResponse, ApiError> {
    let claim = claim.map(web::ReqData::into_inner);
    let session = keeper.send(CreateSession { request: body.into_inner(), claim }).await??;
    Ok(HttpResponse::Created().json(session))
}

/// Sessions, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", operation_id = "listSessions", tag = "sessions", params(ListQuery),
    responses((status = 200, body = Page<Session>), (status = 400, body = Problem)))]
pub async fn list(store: web::Data<Store>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let status = query.status;
    let page = PageQuery { limit: query.limit, cursor: query.cursor };
    let (limit, before) = (page.limit()?, page.cursor::<SessionId>()?);
    let workspace = query.workspace;
    let items =
        store.read("list sessions", move |c| rows::list(c, status, workspace.as_deref(), before, limit + 1)).await?;
    Ok(HttpResponse::Ok().json(Page::from_overfetch(items, limit, |s| s.id.to_string())))
}

/// One session.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", operation_id = "getSession", tag = "sessions", params(("id" = i64, Path)),
    responses((status = 200, body = Session), (status = 404, body = Problem)))]
pub async fn get(store: web::Data<Store>, id: web::Path<SessionId>) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let session = store.read("get session", move |c| rows::get(c, id)).await?;
    Ok(HttpResponse::Ok().json(session.ok_or_else(|| ApiError::not_found(format!("no session {id}")))?))
}

/// Close: the running turn is cancelled, waiting messages never run; history is kept.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", operation_id = "closeSession", tag = "sessions", params(("id" = i64, Path)),
    responses((status = 200, body = Session), (status = 404, body = Problem)))]
pub async fn close(keeper: Keeper, id: web::Path<SessionId>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(keeper.send(CloseSession { session_id: *id }).await??))
}

/// Change the title.
#[utoipa::path(patch, path = "/api/v1/sessions/{id}", operation_id = "renameSession", tag = "sessions", request_body = SessionPatch,
    params(("id" = i64, Path)),
    responses((status = 200, body = Session), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn rename(
    keeper: Keeper,
    id: web::Path<SessionId>,
    body: web::Json<SessionPatch>,
) -> Result<HttpResponse, ApiError> {
    let session = keeper.send(RenameSession { session_id: *id, title: body.into_inner().title }).await??;
    Ok(HttpResponse::Ok().json(session))
}

/// Send a message: it runs as the next turn (at once, or after the running turn).
#[utoipa::path(post, path = "/api/v1/sessions/{id}/messages", operation_id = "sendSessionMessage", tag = "sessions", request_body = NewMessage,
    params(("id" = i64, Path)),
    responses((status = 202, body = Sent), (status = 404, body = Problem),
              (status = 409, description = "the session is closed", body = Problem), (status = 422, body = Problem)))]
pub async fn send(
    keeper: Keeper,
    id: web::Path<SessionId>,
    claim: Option<web::ReqData<Claim>>,
    body: web::Json<NewMessage>,
) -> Result<HttpResponse, ApiError> {
    let (content, claim) = (body.into_inner().content, claim.map(web::ReqData::into_inner));
    let sent = keeper.send(SendMessage { session_id: *id, content, claim }).await??;
    Ok(HttpResponse::Accepted().json(sent))
}

/// The transcript, oldest first.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/messages", operation_id = "listSessionMessages", tag = "sessions", params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = Page<SessionMessage>), (status = 404, body = Problem)))]
pub async fn messages(
    store: web::Data<Store>,
    id: web::Path<SessionId>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let (limit, after) = (query.limit()?, query.cursor::<i64>()?.unwrap_or(0));
    let (session, items) = store
        .read("read transcript", move |c| Ok((rows::get(c, id)?, rows::messages(c, id, after, limit + 1)?)))
        .await?;
    session.ok_or_else(|| ApiError::not_found(format!("no session {id}")))?;
    Ok(HttpResponse::Ok().json(Page::from_overfetch(items, limit, |m| m.id.to_string())))
}
