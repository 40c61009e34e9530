//! Who may talk to the daemon: the `Host` guard (DNS-rebinding protection, on every
//! route) and the credential check (on everything under `/api` and `/metrics`). Both are
//! middleware that `http::app` wraps around the app; they hold no state beyond `Access`.
//!
//! A request carries the owner token or an agent token (`crate::credentials`). The owner
//! may do anything. An agent token may only do what [`agent_may`] lists, for its own
//! execution (the handlers check "own" with the [`Caller`] the guard leaves in the
//! request); everything else is 403 `forbidden_scope`, and each agent token is held to a
//! rate (429 `rate_limited`).

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use subtle::ConstantTimeEq;

use super::problem::ApiError;
use crate::credentials::{AgentGrant, AgentTokens};
use crate::domain::ExecutionId;

/// What the guards compare requests against.
#[derive(Clone)]
pub struct Access {
    token: String,
    agents: AgentTokens,
    bound_ip: IpAddr,
    port: u16,
}

/// Who is asking, as the credential says: the guard puts it in each request under
/// `/api` and `/metrics`; handlers take it as an argument.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The owner token; `client` is what the client calls itself (`X-Warden-Client`,
    /// cleaned), shown in `decided_by`.
    Owner { client: Option<String> },
    /// An execution's agent token.
    Agent(AgentGrant),
}

impl Caller {
    /// `forbidden_scope` unless the caller may act for this execution.
    pub fn require_execution(&self, id: ExecutionId) -> Result<(), ApiError> {
        match self {
            Caller::Agent(grant) if grant.execution_id != id => Err(forbidden_scope(grant, "another execution")),
            _ => Ok(()),
        }
    }

    /// Who answered, as recorded on a decision: `owner`, or `owner via <client>`.
    pub fn decided_by(&self) -> Result<String, ApiError> {
        match self {
            Caller::Owner { client: None } => Ok("owner".into()),
            Caller::Owner { client: Some(client) } => Ok(format!("owner via {client}")),
            Caller::Agent(grant) => Err(forbidden_scope(grant, "deciding approvals")),
        }
    }

    /// The key that scopes what this caller did (idempotency keys are per credential).
    pub fn scope_key(&self) -> String {
        match self {
            Caller::Owner { .. } => "owner".into(),
            Caller::Agent(grant) => format!("agent:{}", grant.execution_id),
        }
    }
}

impl actix_web::FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        std::future::ready(
            req.extensions().get::<Caller>().cloned().ok_or_else(|| ApiError::internal("no credential was checked")),
        )
    }
}

/// 403 `forbidden_scope`, saying what an agent token is for.
pub fn forbidden_scope(grant: &AgentGrant, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_scope",
        format!(
            "this is the agent token of execution {}: it may create, read and withdraw that execution's approvals \
             and read that execution and its output, nothing else ({what} needs the owner's token)",
            grant.execution_id
        ),
    )
}

/// What an agent token may ask for (method and path): its approvals and its execution.
/// The handlers of these routes check that the approval or execution is its own.
pub fn agent_may(method: &actix_web::http::Method, path: &str) -> bool {
    use actix_web::http::Method;
    let Some(rest) = path.strip_prefix("/api/v1/") else { return false };
    let segments: Vec<&str> = rest.split('/').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (method, segments.as_slice()) {
        (&Method::POST, ["approvals"]) => true,
        (&Method::GET, ["approvals", id]) | (&Method::DELETE, ["approvals", id]) => numeric(id),
        (&Method::GET, ["executions", id]) | (&Method::GET, ["executions", id, "output"]) => numeric(id),
        _ => false,
    }
}

/// The client name an owner's request gives (`X-Warden-Client`): at most 40 visible
/// characters of `[A-Za-z0-9._:@-]`, else none.
fn client_label(req: &ServiceRequest) -> Option<String> {
    let raw = req.headers().get("x-warden-client")?.to_str().ok()?.trim();
    let label: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-'))
        .take(40)
        .collect();
    (!label.is_empty()).then_some(label)
}

impl Access {
    pub fn new(token: String, agents: AgentTokens, bound_ip: IpAddr, port: u16) -> Self {
        Access { token, agents, bound_ip, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `localhost`, the loopback addresses and the bound address, with our port or none.
    /// A daemon bound to every interface (`--allow-remote` with 0.0.0.0) accepts any
    /// name: it cannot know them all, and the token still guards the API.
    fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = split_host_port(host) else { return false };
        if port.is_some_and(|p| p != self.port) {
            return false;
        }
        if self.bound_ip.is_unspecified() {
            return true;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == self.bound_ip,
            Err(_) => false,
        }
    }

    /// Constant-time comparison of a presented token with ours.
    fn token_matches(&self, presented: &str) -> bool {
        presented.len() == self.token.len() && bool::from(presented.as_bytes().ct_eq(self.token.as_bytes()))
    }
}

/// Splits `name[:port]`, `[v6][:port]`; `None` when the port is not a number.
fn split_host_port(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => return None,
        };
        (&host[..=end], port)
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    Some((name, port))
}

fn access(req: &ServiceRequest) -> Result<&Access, ApiError> {
    req.app_data::<web::Data<Access>>()
        .map(|data| data.get_ref())
        .ok_or_else(|| ApiError::internal("access settings missing"))
}

/// Refuses requests whose `Host` is not ours (403), so a web page on another name that
/// resolves to 127.0.0.1 cannot reach the daemon.
pub async fn host_guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
    if !access(&req)?.host_allowed(&host) {
        tracing::warn!(host, path = req.path(), "refused a request for a foreign Host");
        let refused = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            format!("Host {host:?} is not this daemon's address; use localhost or 127.0.0.1"),
        );
        return Ok(req.error_response(refused).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// The WebSocket subprotocol a browser offers alongside `warden.token.<token>`: browsers
/// cannot set headers on a WebSocket, and a token in the URL could end up in logs.
pub const WS_PROTOCOL: &str = "warden.v1";
const WS_TOKEN_PREFIX: &str = "warden.token.";

/// Requires a credential: `Authorization: Bearer <token>`; or, for browser WebSockets,
/// the subprotocol `warden.token.<token>` (offered with `warden.v1`); or `?token=` for
/// EventSource, which can do neither. The owner token may do anything; an agent token
/// only what [`agent_may`] lists, at a bounded rate. The [`Caller`] goes into the
/// request for the handlers.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let access = access(&req)?;
    let from_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    let from_protocol = || {
        let offered = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
        offered.split(',').map(str::trim).find_map(|p| p.strip_prefix(WS_TOKEN_PREFIX)).map(str::to_owned)
    };
    let presented = from_header.or_else(from_protocol).or_else(|| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .ok()?
            .into_iter()
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value)
    });
    let caller = match presented {
        Some(token) if access.token_matches(&token) => Ok(Caller::Owner { client: client_label(&req) }),
        Some(token) => match access.agents.find(&token) {
            Some(grant) => Ok(Caller::Agent(grant)),
            None => Err(ApiError::unauthorized("the token is wrong (or an agent token whose execution has ended)")),
        },
        None => Err(ApiError::unauthorized(
            "a token is required: send Authorization: Bearer <token> (the token is in the data dir's `token` file)",
        )),
    };
    let refused = match caller {
        Ok(Caller::Agent(grant)) if !agent_may(req.method(), req.path()) => {
            forbidden_scope(&grant, &format!("{} {}", req.method(), req.path()))
        }
        Ok(caller) => match &caller {
            Caller::Agent(grant) => match grant.take_request() {
                Ok(()) => return admit(req, next, caller).await,
                Err(wait) => rate_limited(wait),
            },
            Caller::Owner { .. } => return admit(req, next, caller).await,
        },
        Err(refused) => refused,
    };
    Ok(req.error_response(refused).map_into_right_body())
}

async fn admit<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
    caller: Caller,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    use actix_web::HttpMessage;
    req.extensions_mut().insert(caller);
    Ok(next.call(req).await?.map_into_left_body())
}

/// 429 for an agent token past its rate, with `Retry-After` in whole seconds.
fn rate_limited(wait: std::time::Duration) -> ApiError {
    use crate::credentials::{AGENT_BURST, AGENT_RATE_PER_S};
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "an agent token may make {AGENT_RATE_PER_S} requests a second on average (bursts of {AGENT_BURST}); \
             retry after {seconds} s"
        ),
    )
    .with_extra("retry_after_s", seconds.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_by_name_and_port() {
        let access = Access::new("t".repeat(64), AgentTokens::default(), "127.0.0.1".parse().unwrap(), 7373);
        for ok in ["localhost:7373", "127.0.0.1:7373", "[::1]:7373", "localhost", "LOCALHOST:7373", "127.0.0.1"] {
            assert!(access.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.com", "evil.com:7373", "localhost:80", "127.0.0.1:x", "", "[::1", "10.0.0.1:7373"] {
            assert!(!access.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_must_match_exactly() {
        let access = Access::new("abc".into(), AgentTokens::default(), "127.0.0.1".parse().unwrap(), 1);
        assert!(access.token_matches("abc"));
        assert!(!access.token_matches("abd"));
        assert!(!access.token_matches("ab"));
        assert!(!access.token_matches(""));
    }

    #[test]
    fn agent_tokens_reach_only_their_approvals_and_execution() {
        use actix_web::http::Method;
        for (method, path) in [
            (Method::POST, "/api/v1/approvals"),
            (Method::GET, "/api/v1/approvals/12"),
            (Method::DELETE, "/api/v1/approvals/12"),
            (Method::GET, "/api/v1/executions/3"),
            (Method::GET, "/api/v1/executions/3/output"),
        ] {
            assert!(agent_may(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::POST, "/api/v1/approvals/12"),
            (Method::GET, "/api/v1/approvals"),
            (Method::GET, "/api/v1/executions"),
            (Method::POST, "/api/v1/executions"),
            (Method::POST, "/api/v1/executions/3/cancel"),
            (Method::GET, "/api/v1/executions/3/stream"),
            (Method::GET, "/api/v1/executions/x"),
            (Method::GET, "/api/v1/executions/3/output/x"),
            (Method::GET, "/api/v1/ws"),
            (Method::GET, "/api/v1/events"),
            (Method::GET, "/api/v1/profiles"),
            (Method::PUT, "/api/v1/providers/local"),
            (Method::GET, "/metrics"),
        ] {
            assert!(!agent_may(&method, path), "{method} {path}");
        }
    }
}
