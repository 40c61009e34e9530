//! `/api/v1/executions`: thin handlers. Commands go to the ExecutionMonitor as one
//! message each; reads come from the `ExecutionReader` (read model + database).

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Caller;
use super::pagination::{Page, PageQuery};
use super::problem::{ApiError, Problem};
use crate::actors::execution_monitor::{Cancel, Enqueue, ExecutionMonitor, ExecutionReader, Pause, Resume, Retry};
use crate::domain::SessionId;
use crate::domain::{
    Envelope, Execution, ExecutionFilter, ExecutionId, ExecutionStatus, NewExecution, OutputLine, Words,
};
use crate::store::idempotency::Claim;

use crate::actors::retention::{DeleteExecution, Retention};

type Monitor = web::Data<Addr<ExecutionMonitor>>;
type Reader = web::Data<ExecutionReader>;

/// Output lines per page by default, and at most.
const OUTPUT_PAGE: usize = 1000;
const OUTPUT_PAGE_MAX: usize = 10_000;

/// `GET /api/v1/executions` query: filters and paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated statuses, e.g. `queued,running`.
    #[serde(default)]
    #[param(value_type = Option<Vec<ExecutionStatus>>, style = Form, explode = false)]
    pub status: Words<ExecutionStatus>,
    /// Workspace name.
    pub workspace: Option<String>,
    pub profile: Option<String>,
    pub provider: Option<String>,
    #[param(value_type = Option<i64>)]
    pub session_id: Option<SessionId>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor`.
    #[param(value_type = Option<i64>)]
    pub cursor: Option<String>,
}

/// `GET /api/v1/executions/{id}/output` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Lines with `n` greater than this (default 0: from the start), at most 2^53 - 1.
    #[param(maximum = 9007199254740991_u64)]
    pub after: Option<u64>,
    /// Lines per page, 1 to 10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
    /// Instead of paging from `after`: the last this-many lines (1 to 10000), so a
    /// viewer can start at the tail of a long output.
    #[param(minimum = 1, maximum = 10000)]
    pub tail: Option<usize>,
}

/// `GET /api/v1/executions/{id}/transcript` query: a page of agent events.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TranscriptQuery {
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor` (the `seq` of its last entry).
    #[param(value_type = Option<u64>, minimum = 0, maximum = 9007199254740991_u64)]
    pub cursor: Option<String>,
}

/// Queue an execution of a profile in a workspace or directory.
#[utoipa::path(post, path = "/api/v1/executions", operation_id = "createExecution", tag = "executions", request_body = NewExecution,
    responses((status = 201, body = Execution), (status = 400, body = Problem),
              (status = 404, description = "unknown profile or workspace", body = Problem),
              (status = 422, body = Problem), (status = 503, description = "shutting down", body = Problem)))]
pub async fn create(
    monitor: Monitor,
    claim: Option<web::ReqData<Claim>>,
    body: web::Json<NewExecution>,
) -> Result<HttpResponse, ApiError> {
    let claim = claim.map(web::ReqData::into_inner);
    let execution = monitor.send(Enqueue { request: body.into_inner(), turn: None, claim }).await??;
    Ok(HttpResponse::Created().json(execution))
}

/// Executions, newest first.
#[utoipa::path(get, path = "/api/v1/executions", operation_id = "listExecutions", tag = "executions", params(ListQuery),
    responses((status = 200, body = Page<Execution>), (status = 400, body = Problem)))]
pub async fn list(reader: Reader, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = PageQuery { limit: query.limit, cursor: query.cursor };
    let limit = page.limit()?;
    let before = page.cursor::<i64>()?.map(ExecutionId);
    let filter = ExecutionFilter {
        status: query.status,
        workspace: query.workspace,
        profile: query.profile,
        provider: query.provider,
        session_id: query.session_id,
    };
    let body = reader.list_json(filter, before, limit).await?;
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// One execution.
#[utoipa::path(get, path = "/api/v1/executions/{id}", operation_id = "getExecution", tag = "executions", params(("id" = i64, Path)),
    responses((status = 200, body = Execution), (status = 404, body = Problem)))]
pub async fn get(reader: Reader, caller: Caller, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    caller.require_execution(ExecutionId(*id))?;
    Ok(HttpResponse::Ok().json(reader.get(ExecutionId(*id)).await?))
}

/// Deletes a final execution: its row, output, events and worktree (its branch stays in
/// the repository). A replay across its events says they were removed. 409 while it is
/// not final.
#[utoipa::path(delete, path = "/api/v1/executions/{id}", operation_id = "deleteExecution", tag = "executions", params(("id" = i64, Path)),
    responses((status = 200, body = crate::domain::Removed), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(retention: web::Data<Addr<Retention>>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let removed = retention.send(DeleteExecution { id: ExecutionId(*id) }).await??;
    Ok(HttpResponse::Ok().json(removed))
}

/// The largest line number a client may name: what a JSON number holds exactly.
const MAX_LINE_NUMBER: u64 = (1 << 53) - 1;

/// Output lines, numbered from 1 across stdout and stderr.
#[utoipa::path(get, path = "/api/v1/executions/{id}/output", operation_id = "getExecutionOutput", tag = "executions",
    params(("id" = i64, Path), OutputQuery),
    responses((status = 200, body = Page<OutputLine>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn output(
    reader: Reader,
    caller: Caller,
    id: web::Path<i64>,
    query: web::Query<OutputQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require_execution(ExecutionId(*id))?;
    if let Some(tail) = query.tail {
        if query.after.is_some() || query.limit.is_some() {
            return Err(ApiError::bad_request("tail cannot be combined with after or limit"));
        }
        if !(1..=OUTPUT_PAGE_MAX).contains(&tail) {
            return Err(ApiError::bad_request(format!("tail must be between 1 and {OUTPUT_PAGE_MAX}, not {tail}")));
        }
        let (items, pruned_at) = reader.output_tail(ExecutionId(*id), tail).await?;
        return Ok(HttpResponse::Ok().json(Page { items, next_cursor: None, pruned_at }));
    }
    let limit = query.limit.unwrap_or(OUTPUT_PAGE);
    if !(1..=OUTPUT_PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {OUTPUT_PAGE_MAX}, not {limit}")));
    }
    let after = query.after.unwrap_or(0);
    if after > MAX_LINE_NUMBER {
        return Err(ApiError::bad_request(format!("after is at most {MAX_LINE_NUMBER}, not {after}")));
    }
    let (items, pruned_at) = reader.output(ExecutionId(*id), after, limit + 1).await?;
    Ok(HttpResponse::Ok().json(Page { pruned_at, ..Page::from_overfetch(items, limit, |l| l.n.to_string()) }))
}

/// An agent execution's transcript: its agent events (`agent.started`, `agent.message`,
/// `agent.tool_call`, `agent.tool_result`, `agent.usage`, `agent.result`) in order, as
/// the event stream carries them; the cursor is the last event's `seq`. Empty for a
/// `text` execution.
#[utoipa::path(get, path = "/api/v1/executions/{id}/transcript", operation_id = "getExecutionTranscript", tag = "executions",
    params(("id" = i64, Path), TranscriptQuery),
    responses((status = 200, body = Page<Envelope>), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn transcript(
    reader: Reader,
    id: web::Path<i64>,
    query: web::Query<TranscriptQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = PageQuery { limit: query.limit, cursor: query.cursor };
    let limit = page.limit()?;
    let after = page.cursor::<u64>()?.unwrap_or(0);
    let body = reader.transcript_json(ExecutionId(*id), after, limit).await?;
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// Cancel: a queued execution leaves its queue; a running one gets SIGTERM, then SIGKILL
/// after 5 s. Returns the execution as it is now (poll for its final state).
#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", operation_id = "cancelExecution", tag = "executions", params(("id" = i64, Path)),
    responses((status = 200, body = Execution), (status = 404, body = Problem),
              (status = 409, description = "already final", body = Problem)))]
pub async fn cancel(monitor: Monitor, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(monitor.send(Cancel { id: ExecutionId(*id) }).await??))
}

/// Pause a running execution (SIGSTOP to its process group); it keeps its slot.
#[utoipa::path(post, path = "/api/v1/executions/{id}/pause", operation_id = "pauseExecution", tag = "executions", params(("id" = i64, Path)),
    responses((status = 200, body = Execution), (status = 404, body = Problem),
              (status = 409, description = "not running", body = Problem)))]
pub async fn pause(monitor: Monitor, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(monitor.send(Pause { id: ExecutionId(*id) }).await??))
}

/// Resume a paused execution (SIGCONT).
#[utoipa::path(post, path = "/api/v1/executions/{id}/resume", operation_id = "resumeExecution", tag = "executions", params(("id" = i64, Path)),
    responses((status = 200, body = Execution), (status = 404, body = Problem),
              (status = 409, description = "not paused", body = Problem)))]
pub async fn resume(monitor: Monitor, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(monitor.send(Resume { id: ExecutionId(*id) }).await??))
}

/// Run a final execution's request again: a new execution with `retry_of` set, at the
/// back of the queue.
#[utoipa::path(post, path = "/api/v1/executions/{id}/retry", operation_id = "retryExecution", tag = "executions", params(("id" = i64, Path)),
    responses((status = 201, body = Execution), (status = 404, body = Problem),
              (status = 409, description = "not final yet", body = Problem)))]
pub async fn retry(
    monitor: Monitor,
    reader: Reader,
    claim: Option<web::ReqData<Claim>>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = ExecutionId(*id);
    let request = reader.request_of(id).await?;
    let claim = claim.map(web::ReqData::into_inner);
    let execution = monitor.send(Retry { id, request, claim }).await??;
    Ok(HttpResponse::Created().json(execution))
}
