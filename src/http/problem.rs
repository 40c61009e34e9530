//! `ApiError`: every failure an HTTP client can see, mapped in this one place to a status
//! and an `application/problem+json` body (RFC 9457) with a stable `code`. Handlers
//! return it with `?`; extractor errors and bare framework errors are turned into it too.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::actors::approval_arbiter::ArbiterError;
use crate::actors::catalog::CatalogError;
use crate::actors::change_tracker::ChangesError;
use crate::actors::client_registry::TooManyClients;
use crate::actors::execution_monitor::MonitorError;
use crate::actors::retention::RetentionError;
use crate::actors::session_keeper::KeeperError;
use crate::store::{StorageTrouble, StoreError};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error as the API shows it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Extra members merged into the problem body (e.g. the current state).
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:warden:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable snake_case code for programs to match on.
    pub code: String,
    /// The request's id (also in the `X-Request-Id` header and the daemon's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into(), extra: None }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    pub fn with_extra(mut self, key: &str, value: serde_json::Value) -> Self {
        self.extra.get_or_insert_with(Default::default).insert(key.to_owned(), value);
        self
    }

    fn body(&self) -> serde_json::Value {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let mut body = serde_json::json!({
            "type": format!("urn:warden:problem:{}", self.code),
            "title": title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
        });
        if let (Some(extra), Some(map)) = (&self.extra, body.as_object_mut()) {
            for (key, value) in extra {
                map.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.content_type(PROBLEM_JSON);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"warden\""));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        if let Some(seconds) = self.extra.as_ref().and_then(|extra| extra.get("retry_after_s")) {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.body(self.body().to_string())
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        let detail = e.to_string();
        match e {
            CatalogError::UnknownWorkspace(_) | CatalogError::UnknownProfile(_) => ApiError::not_found(detail),
            CatalogError::DuplicateWorkspace(_) | CatalogError::DuplicateProfile(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", detail)
            }
            CatalogError::ReadOnlyProfile { .. } => ApiError::new(StatusCode::CONFLICT, "read_only", detail),
            CatalogError::Invalid(_) => ApiError::unprocessable(detail),
            CatalogError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail),
            CatalogError::Store(e) => e.into(),
        }
    }
}

impl From<MonitorError> for ApiError {
    fn from(e: MonitorError) -> Self {
        let detail = e.to_string();
        match e {
            MonitorError::Catalog(e) => e.into(),
            MonitorError::UnknownProvider(_) | MonitorError::UnknownExecution(_) => ApiError::not_found(detail),
            MonitorError::InvalidTransition { execution, .. } => {
                let status = execution.status;
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", detail)
                    .with_extra("current_status", serde_json::json!(status))
                    .with_extra("execution", serde_json::to_value(&execution).unwrap_or_default())
            }
            MonitorError::Invalid(_) => ApiError::unprocessable(detail),
            MonitorError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail),
            MonitorError::Unanswered { source, .. } => source.into(),
            MonitorError::Approval(e) => (*e).into(),
            MonitorError::Store(e) => e.into(),
        }
    }
}

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> Self {
        let detail = e.to_string();
        match e {
            RetentionError::NotFound(_) => ApiError::not_found(detail),
            RetentionError::NotFinal { status, .. } => ApiError::new(StatusCode::CONFLICT, "not_final", detail)
                .with_extra("current_status", serde_json::json!(status)),
            RetentionError::Failed(_) => ApiError::internal(detail),
        }
    }
}

impl From<ChangesError> for ApiError {
    fn from(e: ChangesError) -> Self {
        let detail = e.to_string();
        match e {
            ChangesError::NotRecorded(_) => ApiError::new(StatusCode::CONFLICT, "no_snapshots", detail),
            ChangesError::UnknownPath { .. } => ApiError::new(StatusCode::NOT_FOUND, "unknown_path", detail),
            ChangesError::Invalid(_) => ApiError::unprocessable(detail),
            ChangesError::NoWorktree(_) => ApiError::new(StatusCode::CONFLICT, "no_worktree", detail),
            ChangesError::WorkTreeChanged(_) => ApiError::new(StatusCode::CONFLICT, "work_tree_changed", detail),
            ChangesError::NotMerged { code, files, .. } => {
                let problem = ApiError::new(StatusCode::CONFLICT, code, detail);
                if files.is_empty() {
                    problem
                } else {
                    problem.with_extra("files", serde_json::json!(files))
                }
            }
            ChangesError::Conflict { files, .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", detail).with_extra("files", serde_json::json!(files))
            }
            ChangesError::Worktree(_) => {
                tracing::error!(error = ?detail, "git failed on a worktree");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "git_failed", detail)
            }
            ChangesError::Git(_) => {
                tracing::error!(error = ?detail, "git failed while reading changes");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "git_failed", detail)
            }
            ChangesError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unique_violation() {
            return ApiError::new(StatusCode::CONFLICT, "conflict", "that name is taken");
        }
        match e.storage_trouble() {
            Some(StorageTrouble::Full) => {
                tracing::warn!(error = %e, "a write failed: the disk is full");
                return ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "insufficient_storage",
                    format!("the disk holding warden's database is full, so nothing was changed ({e}); reads still work, and writes work again once there is room"),
                );
            }
            Some(StorageTrouble::Unavailable) => {
                tracing::warn!(error = %e, "a write failed: the database's disk refused it");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    format!("warden's database cannot be written just now, so nothing was changed ({e}); reads still work; try again"),
                );
            }
            None => {}
        }
        tracing::error!(error = %e, "store error answered as 500");
        ApiError::internal(format!("database error: {e}"))
    }
}

impl From<ArbiterError> for ApiError {
    fn from(e: ArbiterError) -> Self {
        let detail = e.to_string();
        match e {
            ArbiterError::NotFound(_) => ApiError::not_found(detail),
            ArbiterError::AlreadyDecided(winner) => ApiError::new(StatusCode::CONFLICT, "already_decided", detail)
                .with_extra("approval", serde_json::to_value(&winner).unwrap_or_default()),
            ArbiterError::Expired(approval) => ApiError::new(StatusCode::CONFLICT, "expired", detail)
                .with_extra("approval", serde_json::to_value(&approval).unwrap_or_default()),
            ArbiterError::Invalid(_) => ApiError::unprocessable(detail),
            ArbiterError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail),
            ArbiterError::NotStored(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", detail),
            ArbiterError::Store(e) => e.into(),
        }
    }
}

impl From<KeeperError> for ApiError {
    fn from(e: KeeperError) -> Self {
        let detail = e.to_string();
        match e {
            KeeperError::NotFound(_) => ApiError::not_found(detail),
            KeeperError::Closed(_) => ApiError::new(StatusCode::CONFLICT, "session_closed", detail),
            KeeperError::Invalid(_) => ApiError::unprocessable(detail),
            KeeperError::Unanswered { source, .. } => source.into(),
            KeeperError::Catalog(e) => e.into(),
            KeeperError::Monitor(e) => e.into(),
            KeeperError::Store(e) => e.into(),
        }
    }
}

impl From<TooManyClients> for ApiError {
    fn from(e: TooManyClients) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "too_many_clients", e.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        tracing::error!(error = %e, "an actor did not answer");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("warden is not answering: {e}"))
    }
}

/// JSON bodies: bad syntax is 400, well-formed JSON of the wrong shape is 422, too big
/// is 413, a missing JSON content type is 415.
pub fn json_error(err: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let api = match &err {
        JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is {length} bytes; the limit is {limit}"),
        ),
        JsonPayloadError::Overflow { limit } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the limit of {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::unprocessable(format!("invalid body: {e}")),
        JsonPayloadError::Deserialize(e) => ApiError::bad_request(format!("malformed JSON: {e}")),
        other => ApiError::bad_request(format!("cannot read the body: {other}")),
    };
    api.into()
}

pub fn query_error(err: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request(format!("invalid query parameters: {err}")).into()
}

pub fn path_error(err: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::not_found(format!("no such resource: {err}")).into()
}

/// Adds `request_id` to a problem body (other responses pass through untouched; only
/// problem bodies, which are small, are read).
pub async fn with_request_id(response: ServiceResponse<BoxBody>, id: &str) -> ServiceResponse<BoxBody> {
    let is_problem =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !is_problem {
        return response;
    }
    let (req, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("request_id".into(), id.into());
            serde_json::Value::Object(map).to_string().into_bytes()
        }
        _ => bytes.to_vec(),
    };
    ServiceResponse::new(req, head.set_body(BoxBody::new(body)))
}

/// For every error response that is not a problem yet (unknown route, wrong method,
/// CORS refusal, framework errors): make it one, keeping the status. Our own errors,
/// returned as `Err` by guards and handlers, are rendered by `ApiError` directly.
pub fn problem_for_bare_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let mut status = res.status();
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => {
            ("not_found", format!("no route for {} {}", res.request().method(), res.request().path()))
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", format!("{} is not allowed on {}", res.request().method(), res.request().path()))
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is too large".to_owned()),
        // actix-cors answers a refused origin with a bare 400.
        StatusCode::BAD_REQUEST if res.request().headers().contains_key(header::ORIGIN) => {
            status = StatusCode::FORBIDDEN;
            (
                "forbidden_origin",
                "cross-origin requests are allowed only from the origins in server.cors_origins".to_owned(),
            )
        }
        s if s.is_server_error() => ("internal", "internal error".to_owned()),
        _ => ("invalid_request", status.canonical_reason().unwrap_or("error").to_owned()),
    };
    let problem = ApiError::new(status, code, detail);
    let (req, mut response) = res.into_parts();
    *response.status_mut() = status;
    let body = BoxBody::new(problem.body().to_string());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    let response = response.set_body(body);
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, response).map_into_right_body()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CommitFailure;

    fn commit_failure(code: rusqlite::ErrorCode) -> StoreError {
        StoreError::Commit { op: "insert", failure: CommitFailure { code: Some(code), message: "x".into() } }
    }

    #[test]
    fn a_full_disk_is_507_and_a_refusing_one_503() {
        let full = ApiError::from(commit_failure(rusqlite::ErrorCode::DiskFull));
        assert_eq!((full.status, full.code), (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"));
        for code in [rusqlite::ErrorCode::SystemIoFailure, rusqlite::ErrorCode::DatabaseBusy] {
            let refused = ApiError::from(commit_failure(code));
            assert_eq!((refused.status, refused.code), (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"));
        }
        let other = ApiError::from(commit_failure(rusqlite::ErrorCode::ConstraintViolation));
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    /// What went wrong with the daemon (storage, a stopped actor) is never the client's
    /// 4xx, however deep it arose.
    #[test]
    fn infrastructure_failures_are_never_4xx() {
        use crate::actors::approval_arbiter::ArbiterError;
        use crate::actors::session_keeper::KeeperError;
        let gate_not_stored =
            MonitorError::Approval(Box::new(ArbiterError::Store(commit_failure(rusqlite::ErrorCode::DiskFull))));
        assert_eq!(ApiError::from(gate_not_stored).status, StatusCode::INSUFFICIENT_STORAGE);
        let gone = MonitorError::Unanswered { actor: "approval arbiter", source: actix::MailboxError::Closed };
        assert_eq!(ApiError::from(gone).status, StatusCode::SERVICE_UNAVAILABLE);
        let keeper = KeeperError::Unanswered { actor: "execution monitor", source: actix::MailboxError::Timeout };
        assert_eq!(ApiError::from(keeper).status, StatusCode::SERVICE_UNAVAILABLE);
        let lost = ArbiterError::NotStored("the decision could not be stored; try again".into());
        assert_eq!(ApiError::from(lost).code, "storage_unavailable");
    }
}
