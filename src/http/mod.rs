//! The HTTP surface: `/health`, the web dashboard's files (`dashboard.rs`), and everything else
//! under `/api/v1` behind the token.
//! Handlers are thin: parse, send one message to an actor, render the reply. Errors map
//! to problem+json in `problem.rs`; the guards live in `auth.rs`.

pub mod approvals;
pub mod auth;
pub mod changes;
pub mod dashboard;
pub mod events;
pub mod executions;
pub mod hangup;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod profiles;
pub mod sessions;
pub mod system;
pub mod workspaces;

use std::time::Instant;

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, ErrorHandlers, Next};
use actix_web::{web, App};
use tracing::Instrument;

use crate::daemon::Actors;
use auth::Access;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 1 << 20;

/// Everything the app factory needs; cloned into each worker.
#[derive(Clone)]
pub struct HttpState {
    pub actors: Actors,
    pub access: Access,
    /// Origins allowed to make cross-origin requests (the daemon's own are added).
    pub cors_origins: Vec<String>,
    pub live: events::LiveSettings,
    /// Idempotency keys whose first request is being answered.
    pub in_flight: idempotency::InFlight,
}

/// Builds the app: guards, error mapping, routes.
pub fn app(
    state: &HttpState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let actors = &state.actors;
    App::new()
        .app_data(web::Data::new(state.access.clone()))
        .app_data(web::Data::new(actors.supervisor.clone()))
        .app_data(web::Data::new(actors.monitor.clone()))
        .app_data(web::Data::new(actors.catalog.clone()))
        .app_data(web::Data::new(actors.arbiter.clone()))
        .app_data(web::Data::new(actors.registry.clone()))
        .app_data(web::Data::new(actors.keeper.clone()))
        .app_data(web::Data::new(actors.changes.clone()))
        .app_data(web::Data::new(actors.notifier.clone()))
        .app_data(web::Data::new(actors.retention.clone()))
        .app_data(web::Data::new(actors.executions.clone()))
        .app_data(web::Data::new(state.live.clone()))
        .app_data(web::Data::new(state.live.store.clone()))
        .app_data(web::Data::new(state.in_flight.clone()))
        .app_data(web::JsonConfig::default().limit(BODY_LIMIT).error_handler(problem::json_error))
        .app_data(web::PayloadConfig::new(BODY_LIMIT))
        .app_data(web::QueryConfig::default().error_handler(problem::query_error))
        .app_data(web::PathConfig::default().error_handler(problem::path_error))
        .service(web::resource("/health").get(system::health))
        .service(web::resource("/metrics").wrap(from_fn(auth::require_token)).get(metrics::metrics_text))
        .service(web::resource("/").get(dashboard::index))
        .service(web::resource("/assets/app.js").get(dashboard::app_js))
        .service(web::resource("/assets/app.css").get(dashboard::app_css))
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(idempotency::idempotency))
                .wrap(from_fn(auth::require_token))
                .configure(api_routes),
        )
        .wrap(cors(state))
        .wrap(from_fn(auth::host_guard))
        .wrap(ErrorHandlers::new().default_handler(problem::problem_for_bare_errors))
        .wrap(from_fn(trace_request))
}

/// Declares the routes under `/api/v1` once: `api_routes` registers them (one resource
/// per path, so a wrong method is a 405) and [`API_ROUTES`] lists them, so the tests that
/// check every route needs the token and is in `openapi::ApiDoc` cover a new route by
/// themselves.
macro_rules! route_table {
    ($($path:literal => [$($method:ident: $handler:path),+ $(,)?]),+ $(,)?) => {
        /// Every `(method, path)` under `/api/v1`, as `api_routes` registers them.
        pub const API_ROUTES: &[(&str, &str)] = &[$($((stringify!($method), concat!("/api/v1", $path))),+),+];

        fn api_routes(cfg: &mut web::ServiceConfig) {
            $(cfg.service(web::resource($path)$(.$method($handler))+);)+
        }
    };
}

route_table! {
    "/status" => [get: system::status],
    "/openapi.json" => [get: openapi::openapi_json],
    "/workspaces" => [get: workspaces::list, post: workspaces::create],
    "/workspaces/{workspace}" => [get: workspaces::get, delete: workspaces::remove],
    "/profiles" => [get: profiles::list, post: profiles::create],
    "/profiles/{name}" => [get: profiles::get, put: profiles::update, delete: profiles::remove],
    "/providers" => [get: profiles::list_providers],
    "/providers/{name}" => [get: profiles::get_provider, put: profiles::set_provider],
    "/executions" => [get: executions::list, post: executions::create],
    "/executions/{id}" => [get: executions::get, delete: executions::delete],
    "/executions/{id}/output" => [get: executions::output],
    "/executions/{id}/transcript" => [get: executions::transcript],
    "/executions/{id}/cancel" => [post: executions::cancel],
    "/executions/{id}/pause" => [post: executions::pause],
    "/executions/{id}/resume" => [post: executions::resume],
    "/executions/{id}/retry" => [post: executions::retry],
    "/executions/{id}/stream" => [get: events::execution_stream],
    "/executions/{id}/changes" => [get: changes::changes],
    "/executions/{id}/diff" => [get: changes::diff],
    "/executions/{id}/apply" => [post: changes::apply],
    "/executions/{id}/merge" => [post: changes::merge],
    "/executions/{id}/discard" => [post: changes::discard],
    "/notify/test" => [post: system::notify_test],
    "/prune" => [post: system::prune],
    "/events" => [get: events::sse],
    "/events/history" => [get: events::history],
    "/ws" => [get: events::ws],
    "/approvals" => [get: approvals::list, post: approvals::create],
    "/approvals/{id}" => [get: approvals::get, post: approvals::decide, delete: approvals::withdraw],
    "/sessions" => [get: sessions::list, post: sessions::create],
    "/sessions/{id}" => [get: sessions::get, delete: sessions::close, patch: sessions::rename],
    "/sessions/{id}/messages" => [get: sessions::messages, post: sessions::send],
}

/// Routes outside `/api/v1` that need the token too.
pub const GUARDED_ROUTES: &[(&str, &str)] = &[("get", "/metrics")];

/// Cross-origin requests only from configured origins and the daemon's own addresses
/// (a browser sends `Origin` even on same-origin POSTs).
fn cors(state: &HttpState) -> Cors {
    let port = state.access.port();
    let own = [format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}"), format!("http://[::1]:{port}")];
    own.iter()
        .chain(&state.cors_origins)
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "last-event-id",
            "x-request-id",
            "x-warden-client",
        ])
        .expose_headers(["x-request-id", "x-warden-diff-truncated"])
        .max_age(600)
        .block_on_origin_mismatch(true)
}

/// Every request gets an id: the client's `X-Request-Id` when it is a sane token, else a
/// new one. It is echoed in the response header and in problem bodies (`request_id`), and
/// every log line of the request carries it. One log line per request, at debug level
/// (info for errors).
async fn trace_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    let method = req.method().clone();
    let path = req.path().to_owned();
    let span = tracing::info_span!("request", request_id = %id);
    // The guards answer with responses, not errors, so that those get the id too.
    let response = next.call(req).instrument(span.clone()).await?.map_into_boxed_body();
    let status = response.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".into());
    crate::metrics::metrics().count_request(&route, status);
    span.in_scope(|| {
        if status >= 400 {
            tracing::info!(%method, path, status, micros, "request");
        } else {
            tracing::debug!(%method, path, status, micros, "request");
        }
    });
    let mut response = problem::with_request_id(response, &id).await;
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(header::HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(response)
}

const REQUEST_ID: &str = "x-request-id";

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}
