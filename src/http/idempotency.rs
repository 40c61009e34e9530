//! `Idempotency-Key` on POSTs: the first request with a key runs and its response (any
//! status below 500) is stored for 24 h; the same key with the same method, path and
//! body gets that response again (`Idempotent-Replayed: true`) and creates nothing; the
//! same key with a different request is 409 `idempotency_key_reused`; a key whose first
//! request is still running is 409 `idempotency_key_in_flight`. Keys live in the
//! database, so they survive a restart. Keys belong to their credential (the owner, or
//! one execution's agent): one caller never replays or blocks another's. This
//! middleware wraps `/api/v1`, inside the credential check.
//!
//! A create (an execution, a retry, an approval, a session, a session message) gets the
//! key as a [`Claim`] and remembers it in its own transaction; the exact response is
//! then written over it without holding the reply. Other POSTs (decisions, cancels,
//! catalog changes: repeating them changes nothing twice) store their response before
//! it is sent.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use dashmap::DashMap;
use futures_util::StreamExt;

use super::problem::ApiError;
use super::BODY_LIMIT;
use crate::domain::now;
use crate::store::idempotency::{self as keys, Claim};
use crate::store::Store;

const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";

/// Keys whose first request is being answered now (shared by every HTTP worker).
#[derive(Clone, Default)]
pub struct InFlight(Arc<DashMap<String, ()>>);

/// Removes the key from `InFlight` however the request ends.
struct Holding {
    in_flight: InFlight,
    key: String,
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.in_flight.0.remove(&self.key);
    }
}

pub async fn idempotency(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let key = match req.headers().get(HEADER) {
        Some(value) if req.method() == Method::POST => value.to_str().ok().map(str::to_owned).unwrap_or_default(),
        _ => return Ok(next.call(req).await?.map_into_boxed_body()),
    };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        let refused = ApiError::bad_request("Idempotency-Key must be 1 to 255 visible ASCII characters");
        return Ok(req.error_response(refused).map_into_boxed_body());
    }
    let (Some(store), Some(in_flight)) =
        (req.app_data::<web::Data<Store>>().cloned(), req.app_data::<web::Data<InFlight>>().cloned())
    else {
        return Err(ApiError::internal("idempotency settings missing").into());
    };
    // Keys are the caller's own: an agent can neither replay nor block the owner's.
    let scope = req.extensions().get::<super::auth::Caller>().map(|caller| caller.scope_key());
    let Some(scope) = scope else { return Err(ApiError::internal("no credential was checked").into()) };
    let (sent, key) = (key.clone(), format!("{scope}:{key}"));
    let (http, mut payload) = req.into_parts();
    let body = match read_body(&mut payload).await {
        Ok(body) => body,
        Err(e) => return Ok(refuse(http, e)),
    };
    let (method, path) = (http.method().to_string(), http.path().to_owned());
    // Claimed before the lookup and held until the response is stored, so two requests
    // with one key never both run.
    if in_flight.0.insert(key.clone(), ()).is_some() {
        let refused = ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_flight",
            format!("a request with Idempotency-Key {sent:?} is still being answered; retry it in a moment"),
        );
        return Ok(refuse(http, refused));
    }
    let _holding = Holding { in_flight: in_flight.get_ref().clone(), key: key.clone() };
    let since = now() - keys::KEPT_FOR;
    let lookup = key.clone();
    let found = store.read("read idempotency key", move |c| keys::get(c, &lookup, since)).await;
    match found {
        Err(e) => return Ok(refuse(http, e.into())),
        Ok(Some(stored)) if stored.method == method && stored.path == path && stored.body == body => {
            let mut replay = HttpResponse::build(StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK));
            if let Some(content_type) = &stored.content_type {
                replay.insert_header((header::CONTENT_TYPE, content_type.as_str()));
            }
            replay.insert_header((REPLAYED, "true"));
            return Ok(ServiceResponse::new(http, replay.body(stored.response)));
        }
        Ok(Some(stored)) => {
            let refused = ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                format!(
                    "Idempotency-Key {sent:?} was used for a different request ({} {}) in the last 24 h",
                    stored.method, stored.path
                ),
            );
            return Ok(refuse(http, refused));
        }
        Ok(None) => {}
    }
    let claim = Claim::new(key, method, path, body.clone());
    let req = ServiceRequest::from_parts(http, Payload::from(Bytes::from(body)));
    req.extensions_mut().insert(claim.clone());
    let response = next.call(req).await?.map_into_boxed_body();
    let status = response.status();
    if status.is_server_error() {
        return Ok(response);
    }
    let (http, response) = response.into_parts();
    let (head, response_body) = response.into_parts();
    let response_bytes = actix_web::body::to_bytes(response_body).await.unwrap_or_default();
    let content_type = head.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let remembered = claim.answered(status.as_u16(), content_type, response_bytes.to_vec());
    let at = now();
    let store = store.get_ref().clone();
    let write =
        async move { store.write("remember idempotency key", move |c| keys::put(c, &remembered, at, since)).await };
    if claim.is_remembered() {
        // The create remembered the key with itself: this only makes the replay exact.
        actix_web::rt::spawn(async move {
            if let Err(e) = write.await {
                tracing::warn!(error = %e, "storing the exact response of an idempotency key failed");
            }
        });
    } else if let Err(e) = write.await {
        tracing::error!(error = %e, "storing an idempotency key failed; a retry with it would run again");
    }
    Ok(ServiceResponse::new(http, head.set_body(BoxBody::new(response_bytes))))
}

async fn read_body(payload: &mut Payload) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than the limit of {BODY_LIMIT} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The problem response to a request whose payload was already taken.
fn refuse(http: HttpRequest, error: ApiError) -> ServiceResponse<BoxBody> {
    ServiceResponse::new(http, actix_web::ResponseError::error_response(&error))
}
