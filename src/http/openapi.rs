//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations. Every route must be listed in `ApiDoc`.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::{AllOf, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, Response};
use utoipa::{Modify, OpenApi};

use super::{approvals, changes, events, executions, metrics, problem, profiles, sessions, system, workspaces};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "warden",
        description = "Local daemon that runs and supervises AI coding-agent executions. \
            Every /api route needs the owner token from the data dir's `token` file, as \
            `Authorization: Bearer <token>` (or `?token=` for EventSource and WebSocket). \
            An execution's agent token (its WARDEN_TOKEN) may only create and read that \
            execution's approvals and read the execution and its output. \
            Errors are application/problem+json with a stable `code`."
    ),
    paths(
        system::health, system::status, system::notify_test, system::prune, openapi_json, metrics::metrics_text,
        workspaces::list, workspaces::create, workspaces::get, workspaces::remove,
        profiles::list, profiles::get, profiles::create, profiles::update, profiles::remove,
        profiles::list_providers, profiles::get_provider, profiles::set_provider,
        executions::create, executions::list, executions::get, executions::delete, executions::output, executions::transcript,
        executions::cancel, executions::pause, executions::resume, executions::retry,
        changes::changes, changes::diff, changes::apply, changes::merge, changes::discard,
        events::execution_stream, events::sse, events::history, events::ws,
        approvals::create, approvals::list, approvals::get, approvals::decide, approvals::withdraw,
        sessions::create, sessions::list, sessions::get, sessions::close, sessions::rename,
        sessions::send, sessions::messages,
    ),
    components(schemas(problem::Problem, crate::domain::DiffFormat)),
    modifiers(&BearerToken, &CommonProblems, &FlattenedSchemas),
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

/// What any operation may answer besides its own responses, added here once rather than
/// on each handler: the guards' refusals (403 Host or Origin; 401 token), 404 for a path
/// naming nothing, 400 for bad query parameters, the body errors (400, 413, 415, 422),
/// the `Idempotency-Key` header and its 409 on every POST, and on writes 503 (shutting
/// down, storage unavailable) and 507 (disk full). Every 4xx/5xx is
/// `application/problem+json` with the `Problem` schema.
struct CommonProblems;

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let guarded = path.starts_with("/api/") || path == "/metrics";
            for (method, operation) in operations(item) {
                let mut common = vec![(
                    "403",
                    "forbidden_host or forbidden_origin: the Host or Origin is not allowed; forbidden_scope: an agent \
                     token may not do this",
                )];
                if guarded {
                    common.push(("401", "unauthorized: the token is missing or wrong"));
                    common.push(("429", "rate_limited: an agent token made too many requests (see Retry-After)"));
                }
                if path.contains('{') {
                    common.push(("404", "not_found: nothing by that id or name"));
                }
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                if parameters.iter().any(|p| p.parameter_in == ParameterIn::Query) {
                    common.push(("400", "invalid_request: a query parameter is malformed"));
                }
                if operation.request_body.is_some() {
                    common.extend([
                        ("400", "invalid_request: the body is not JSON"),
                        ("413", "payload_too_large: the body is over 1 MiB"),
                        ("415", "unsupported_media_type: the body is not application/json"),
                        ("422", "invalid_request: the body is JSON of the wrong shape or invalid"),
                    ]);
                }
                if method == "post" {
                    parameters.push(idempotency_key());
                    common.extend([
                        ("400", "invalid_request: the Idempotency-Key is malformed"),
                        ("409", "idempotency_key_reused or idempotency_key_in_flight"),
                    ]);
                }
                if method != "get" {
                    common.extend([
                        ("503", "shutting_down, or storage_unavailable: the database cannot be written now"),
                        ("507", "insufficient_storage: the disk holding the database is full"),
                    ]);
                }
                let responses = &mut operation.responses.responses;
                for (status, description) in common {
                    responses.entry(status.to_owned()).or_insert_with(|| RefOr::T(Response::new(description)));
                }
                for (status, response) in responses.iter_mut() {
                    if let (true, RefOr::T(response)) = (status.as_str() >= "400", response) {
                        response.content.clear();
                        response.content.insert(
                            problem::PROBLEM_JSON.to_owned(),
                            Content::new(Some(RefOr::Ref(Ref::from_schema_name("Problem")))),
                        );
                    }
                }
                if parameters.is_empty() {
                    operation.parameters = None;
                }
            }
        }
    }
}

/// A struct with a `#[serde(flatten)]` field (`Profile`, `Provider`) comes out of utoipa as
/// `allOf` of the flattened struct, whose `additionalProperties: false` (it is also a
/// request body, with `deny_unknown_fields`) then forbids the outer fields. Each such
/// schema is made one object with the properties of all its parts, as it is on the wire.
struct FlattenedSchemas;

impl Modify for FlattenedSchemas {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else { return };
        let named = components.schemas.clone();
        for schema in components.schemas.values_mut() {
            merge_all_of(schema, &named);
        }
    }
}

/// Component schemas by name.
type Schemas = std::collections::BTreeMap<String, RefOr<Schema>>;

/// Merges every `allOf` of objects in `schema` (and the schemas inside it) into one
/// object; `named` resolves references to component schemas.
fn merge_all_of(schema: &mut RefOr<Schema>, named: &Schemas) {
    let RefOr::T(inner) = schema else { return };
    match inner {
        Schema::AllOf(all) => {
            if let Some(object) = merged(all, named) {
                *inner = Schema::Object(object);
            }
        }
        Schema::Object(object) => {
            for property in object.properties.values_mut() {
                merge_all_of(property, named);
            }
        }
        Schema::Array(array) => {
            if let utoipa::openapi::schema::ArrayItems::RefOrSchema(items) = &mut array.items {
                merge_all_of(items, named);
            }
        }
        _ => {}
    }
}

/// One object with the properties and required fields of every part, if every part is
/// an object.
fn merged(all: &AllOf, named: &Schemas) -> Option<Object> {
    let mut object = Object::new();
    object.description = all.description.clone();
    for item in &all.items {
        let part = match item {
            RefOr::T(Schema::Object(part)) => part,
            RefOr::Ref(r) => match named.get(r.ref_location.rsplit('/').next()?)? {
                RefOr::T(Schema::Object(part)) => part,
                _ => return None,
            },
            _ => return None,
        };
        object.properties.extend(part.properties.clone());
        object.required.extend(part.required.iter().cloned());
    }
    Some(object)
}

/// The operations of a path, by method.
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|o| (method, o)))
    .collect()
}

/// The `Idempotency-Key` request header every POST takes.
fn idempotency_key() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes the POST repeatable for 24 h: the same key with the same request replays the first \
             response (Idempotent-Replayed: true); with a different request it is 409 idempotency_key_reused.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some("^[!-~]+$")),
        ))
        .build()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "getOpenApi", tag = "system",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()));
    HttpResponse::Ok().content_type("application/json").body(doc.as_str())
}
