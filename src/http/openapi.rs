//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations. Every route must be listed in `ApiDoc`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{approvals, changes, events, executions, metrics, problem, profiles, sessions, system, workspaces};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "warden",
        description = "Local daemon that runs and supervises AI coding-agent executions. \
            Every /api route needs the token from the data dir's `token` file, as \
            `Authorization: Bearer <token>` (or `?token=` for EventSource and WebSocket). \
            Errors are application/problem+json with a stable `code`."
    ),
    paths(
        system::health, system::status, openapi_json, metrics::metrics_text,
        workspaces::list, workspaces::create, workspaces::get, workspaces::remove,
        profiles::list, profiles::get, profiles::create, profiles::update, profiles::remove,
        profiles::list_providers, profiles::get_provider, profiles::set_provider,
        executions::create, executions::list, executions::get, executions::output,
        executions::cancel, executions::pause, executions::resume, executions::retry,
        changes::changes, changes::diff,
        events::execution_stream, events::sse, events::history, events::ws,
        approvals::create, approvals::list, approvals::get, approvals::decide,
        sessions::create, sessions::list, sessions::get, sessions::close, sessions::rename,
        sessions::send, sessions::messages,
    ),
    components(schemas(problem::Problem)),
    modifiers(&BearerToken),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));
    HttpResponse::Ok().content_type("application/json").body(doc.as_str())
}
