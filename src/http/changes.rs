//! `/api/v1/executions/{id}/changes` and `/diff`: what an execution changed in its git
//! work tree; `/apply`, `/merge` and `/discard`: an isolated execution's work brought
//! back or dropped. The execution comes from the `ExecutionReader`; the ChangeTracker compares
//! its snapshots (or, while it runs, its start with the working tree now).

use actix::Addr;
use actix_web::{web, HttpResponse};

use super::problem::{ApiError, Problem};
use crate::actors::change_tracker::{Apply, ChangeTracker, Diff, Discard, GetChanges, GetDiff, Merge};
use crate::actors::execution_monitor::ExecutionReader;
use crate::domain::{
    AppliedWork, ChangesReport, DiffQuery, DiffReport, Execution, ExecutionId, MergeRequest, MergedWork,
};

type Tracker = web::Data<Addr<ChangeTracker>>;
type Reader = web::Data<ExecutionReader>;

/// The files an execution changed, with line counts and totals. `changes` is null with a
/// `reason` when there is nothing to compare (not a git work tree, not started yet, a
/// snapshot failed). While the execution runs, it compares with the working tree now.
#[utoipa::path(get, path = "/api/v1/executions/{id}/changes", operation_id = "getExecutionChanges", tag = "changes", params(("id" = i64, Path)),
    responses((status = 200, body = ChangesReport), (status = 404, body = Problem),
              (status = 500, description = "git failed", body = Problem)))]
pub async fn changes(tracker: Tracker, reader: Reader, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let execution = reader.get(ExecutionId(*id)).await?;
    Ok(HttpResponse::Ok().json(tracker.send(GetChanges { execution }).await??))
}

/// The diff of an execution: git's unified diff (`text/x-diff`), or one entry per file
/// with `format=json`. Binary files are named, not dumped. A diff longer than
/// `changes.max_diff_bytes` is cut with a marker line (and `X-Warden-Diff-Truncated:
/// true`); ask for one file at a time with `path`.
#[utoipa::path(get, path = "/api/v1/executions/{id}/diff", operation_id = "getExecutionDiff", tag = "changes", params(("id" = i64, Path), DiffQuery),
    responses((status = 200, description = "the unified diff", content_type = "text/x-diff", body = String),
              (status = 200, description = "with format=json", body = DiffReport),
              (status = 400, body = Problem), (status = 404, description = "unknown execution or path", body = Problem),
              (status = 409, description = "no snapshots to compare", body = Problem),
              (status = 422, body = Problem), (status = 500, description = "git failed", body = Problem)))]
pub async fn diff(
    tracker: Tracker,
    reader: Reader,
    id: web::Path<i64>,
    query: web::Query<DiffQuery>,
) -> Result<HttpResponse, ApiError> {
    let execution = reader.get(ExecutionId(*id)).await?;
    Ok(match tracker.send(GetDiff { execution, query: query.into_inner() }).await?? {
        Diff::Unified { text, truncated } => HttpResponse::Ok()
            .content_type("text/x-diff; charset=utf-8")
            .insert_header(("X-Warden-Diff-Truncated", if truncated { "true" } else { "false" }))
            .body(text),
        Diff::Json(report) => HttpResponse::Ok().json(report),
    })
}

/// Discard an isolated execution's work: its worktree and its branch are removed (the
/// user's work tree and other branches are not touched). Final executions only.
#[utoipa::path(post, path = "/api/v1/executions/{id}/discard", operation_id = "discardExecutionWork", tag = "changes", params(("id" = i64, Path)),
    responses((status = 200, body = Execution), (status = 404, body = Problem),
              (status = 409, description = "not final, not isolated, or discarded already", body = Problem),
              (status = 500, description = "git failed", body = Problem)))]
pub async fn discard(tracker: Tracker, reader: Reader, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let execution = reader.get(ExecutionId(*id)).await?;
    Ok(HttpResponse::Ok().json(tracker.send(Discard { execution }).await??))
}

/// Apply an isolated execution's work onto your work tree as uncommitted changes, 3-way,
/// only when every file merges cleanly: otherwise 409 `conflict` with the `files` that
/// conflict, and nothing is changed. Your index, HEAD and branches are not touched.
#[utoipa::path(post, path = "/api/v1/executions/{id}/apply", operation_id = "applyExecutionWork", tag = "changes", params(("id" = i64, Path)),
    responses((status = 200, body = AppliedWork), (status = 404, body = Problem),
              (status = 409, description = "conflicts, or not final, not isolated, discarded", body = Problem),
              (status = 500, description = "git failed", body = Problem)))]
pub async fn apply(tracker: Tracker, reader: Reader, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let execution = reader.get(ExecutionId(*id)).await?;
    Ok(HttpResponse::Ok().json(tracker.send(Apply { execution }).await??))
}

/// Merge an isolated execution's work into a branch (default: the branch its base came
/// from) as a commit, without checking anything out; then its worktree and branch are
/// removed. When that branch is checked out, its checkout follows, unless an uncommitted
/// change there is in the way (409 `uncommitted_changes_in_the_way`, nothing changed).
/// Conflicts are 409 `conflict` with the `files`, nothing changed.
#[utoipa::path(post, path = "/api/v1/executions/{id}/merge", operation_id = "mergeExecutionWork", tag = "changes", params(("id" = i64, Path)),
    request_body = MergeRequest,
    responses((status = 200, body = MergedWork), (status = 404, body = Problem),
              (status = 409, description = "conflicts, a change in the way, nothing to merge, or not final, not isolated, merged or discarded", body = Problem),
              (status = 422, description = "no such branch to merge into, or a bad message", body = Problem),
              (status = 500, description = "git failed", body = Problem)))]
pub async fn merge(
    tracker: Tracker,
    reader: Reader,
    id: web::Path<i64>,
    body: web::Json<MergeRequest>,
) -> Result<HttpResponse, ApiError> {
    let execution = reader.get(ExecutionId(*id)).await?;
    Ok(HttpResponse::Ok().json(tracker.send(Merge { execution, request: body.into_inner() }).await??))
}
