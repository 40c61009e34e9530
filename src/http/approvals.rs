//! `/api/v1/approvals`: thin handlers over the ApprovalArbiter. A decision is one
//! `Decide` message; the arbiter's answer says whether this one won.

use std::time::Duration;

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{forbidden_scope, Caller};
use super::hangup::hung_up;
use super::pagination::{Page, PageQuery};
use super::problem::{ApiError, Problem};
use crate::actors::approval_arbiter::{ApprovalArbiter, Decide, Request, Watch, Withdraw};
use crate::credentials::AGENT_WAITS;
use crate::domain::optional_word;
use crate::domain::{Approval, ApprovalId, ApprovalKind, ApprovalStatus, DecisionRequest, NewApproval};
use crate::store::idempotency::Claim;
use crate::store::{approvals as rows, Store};

type Arbiter = web::Data<Addr<ApprovalArbiter>>;

/// The longest a long poll may wait.
pub const MAX_WAIT_S: u64 = 300;

/// `GET /api/v1/approvals` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this status.
    #[serde(default, deserialize_with = "optional_word")]
    #[param(value_type = Option<ApprovalStatus>)]
    pub status: Option<ApprovalStatus>,
    /// Only the approvals about this execution.
    pub execution_id: Option<i64>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[param(value_type = Option<i64>)]
    pub cursor: Option<String>,
}

/// `GET /api/v1/approvals/{id}` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Hold the request until the approval is decided or this many seconds pass (≤ 300).
    #[param(maximum = 300)]
    pub wait: Option<u64>,
}

/// Ask a human (agents, hooks, scripts). With an agent token the approval is about the
/// token's own execution (and its session): those are filled in, and naming any other
/// is 403 `forbidden_scope`.
#[utoipa::path(post, path = "/api/v1/approvals", operation_id = "createApproval", tag = "approvals", request_body = NewApproval,
    responses((status = 201, body = Approval), (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create(
    arbiter: Arbiter,
    caller: Caller,
    claim: Option<web::ReqData<Claim>>,
    body: web::Json<NewApproval>,
) -> Result<HttpResponse, ApiError> {
    let mut request = body.into_inner();
    let kind = match &caller {
        Caller::Owner { .. } => ApprovalKind::Owner,
        Caller::Agent(grant) => {
            if request.execution_id.is_some_and(|id| id != grant.execution_id) {
                return Err(forbidden_scope(grant, "asking about another execution"));
            }
            if request.session_id.is_some() && request.session_id != grant.session_id {
                return Err(forbidden_scope(grant, "asking about another session"));
            }
            request.execution_id = Some(grant.execution_id);
            request.session_id = grant.session_id;
            ApprovalKind::Agent
        }
    };
    let claim = claim.map(web::ReqData::into_inner);
    let approval = arbiter.send(Request { request, kind, claim }).await??;
    Ok(HttpResponse::Created().json(approval))
}

/// Approvals, newest first.
#[utoipa::path(get, path = "/api/v1/approvals", operation_id = "listApprovals", tag = "approvals", params(ListQuery),
    responses((status = 200, body = Page<Approval>), (status = 400, body = Problem)))]
pub async fn list(store: web::Data<Store>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let status = query.status;
    let page = PageQuery { limit: query.limit, cursor: query.cursor };
    let (limit, before) = (page.limit()?, page.cursor::<ApprovalId>()?);
    let execution = query.execution_id;
    let items = store.read("list approvals", move |c| rows::list(c, status, execution, before, limit + 1)).await?;
    Ok(HttpResponse::Ok().json(Page::from_overfetch(items, limit, |a| a.id.to_string())))
}

/// One approval; with `?wait=S`, a long poll that answers as soon as it is decided.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", operation_id = "getApproval", tag = "approvals", params(("id" = i64, Path), WaitQuery),
    responses((status = 200, body = Approval), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    req: HttpRequest,
    arbiter: Arbiter,
    store: web::Data<Store>,
    caller: Caller,
    id: web::Path<ApprovalId>,
    query: web::Query<WaitQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_S {
        return Err(ApiError::bad_request(format!("wait must be at most {MAX_WAIT_S} seconds")));
    }
    if let Caller::Agent(grant) = &caller {
        require_own(&store, grant, id).await?;
    }
    if wait > 0 {
        let _slot = match &caller {
            Caller::Agent(grant) => Some(grant.hold_wait().ok_or_else(|| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("an agent token may hold {AGENT_WAITS} long polls at once; retry after one answers"),
                )
                .with_extra("retry_after_s", 1.into())
            })?),
            Caller::Owner { .. } => None,
        };
        if let Some(settled) = arbiter.send(Watch { id }).await? {
            tokio::select! {
                answer = tokio::time::timeout(Duration::from_secs(wait), settled) => {
                    if let Ok(Ok(approval)) = answer {
                        return Ok(HttpResponse::Ok().json(approval));
                    }
                }
                // Nobody is left to answer: the connection and the watch go at once.
                () = hung_up(&req) => return Ok(HttpResponse::NoContent().finish()),
            }
        }
    }
    let approval = store.read("get approval", move |c| rows::get(c, id)).await?;
    let approval = approval.ok_or_else(|| ApiError::not_found(format!("no approval {id}")))?;
    Ok(HttpResponse::Ok().json(approval))
}

/// An agent reaches only its own execution's approvals; others are as if missing.
async fn require_own(store: &Store, grant: &crate::credentials::AgentGrant, id: ApprovalId) -> Result<(), ApiError> {
    let approval = store.read("get approval", move |c| rows::get(c, id)).await?;
    if approval.and_then(|a| a.execution_id) != Some(grant.execution_id) {
        return Err(ApiError::not_found(format!("no approval {id} of execution {}", grant.execution_id)));
    }
    Ok(())
}

/// Withdraw a pending approval: whoever asked no longer waits (a hook that was
/// stopped). It ends `cancelled`, so no later answer seems to count. An agent token may
/// withdraw its own execution's approvals only. 409 as for a decision when it is settled.
#[utoipa::path(delete, path = "/api/v1/approvals/{id}", operation_id = "withdrawApproval", tag = "approvals",
    params(("id" = i64, Path)),
    responses((status = 200, body = Approval), (status = 404, body = Problem),
              (status = 409, description = "already decided or expired", body = Problem)))]
pub async fn withdraw(
    arbiter: Arbiter,
    store: web::Data<Store>,
    caller: Caller,
    id: web::Path<ApprovalId>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let by = match &caller {
        Caller::Owner { .. } => "owner".to_owned(),
        Caller::Agent(grant) => {
            require_own(&store, grant, id).await?;
            format!("the agent of execution {}", grant.execution_id)
        }
    };
    Ok(HttpResponse::Ok().json(arbiter.send(Withdraw { id, by }).await??))
}

/// Decide (owner token only). 200 with the approval when this answer won; 409
/// `already_decided` (the body's `approval` is the winner) or `expired`. `decided_by` is
/// `owner`, or `owner via <X-Warden-Client>` when the client names itself.
#[utoipa::path(post, path = "/api/v1/approvals/{id}", operation_id = "decideApproval", tag = "approvals", request_body = DecisionRequest,
    params(("id" = i64, Path), ("X-Warden-Client" = Option<String>, Header, description = "the client answering (cli, web, …)")),
    responses((status = 200, body = Approval), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "already decided or expired", body = Problem), (status = 422, body = Problem)))]
pub async fn decide(
    caller: Caller,
    arbiter: Arbiter,
    id: web::Path<ApprovalId>,
    body: web::Json<DecisionRequest>,
) -> Result<HttpResponse, ApiError> {
    let decided_by = caller.decided_by()?;
    let DecisionRequest { decision, reason } = body.into_inner();
    let approval = arbiter.send(Decide { id: *id, decision, reason, decided_by }).await??;
    Ok(HttpResponse::Ok().json(approval))
}
