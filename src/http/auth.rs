//! Who may talk to the daemon: the `Host` guard (DNS-rebinding protection, on every
//! route) and the bearer-token check (on everything under `/api`). Both are middleware
//! that `http::configure` wraps around the app; they hold no state beyond `Access`.

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;
use subtle::ConstantTimeEq;

use super::problem::ApiError;

/// What the guards compare requests against.
#[derive(Clone)]
pub struct Access {
    token: String,
    bound_ip: IpAddr,
    port: u16,
}

impl Access {
    pub fn new(token: String, bound_ip: IpAddr, port: u16) -> Self {
        Access { token, bound_ip, port }
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

/// Requires the API token: `Authorization: Bearer <token>`; or, for browser WebSockets,
/// the subprotocol `warden.token.<token>` (offered with `warden.v1`); or `?token=` for
/// EventSource, which can do neither.
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
    let refused = match presented {
        Some(token) if access.token_matches(&token) => return Ok(next.call(req).await?.map_into_left_body()),
        Some(_) => ApiError::unauthorized("the token is wrong"),
        None => ApiError::unauthorized(
            "a token is required: send Authorization: Bearer <token> (the token is in the data dir's `token` file)",
        ),
    };
    Ok(req.error_response(refused).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_by_name_and_port() {
        let access = Access::new("t".repeat(64), "127.0.0.1".parse().unwrap(), 7373);
        for ok in ["localhost:7373", "127.0.0.1:7373", "[::1]:7373", "localhost", "LOCALHOST:7373", "127.0.0.1"] {
            assert!(access.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.com", "evil.com:7373", "localhost:80", "127.0.0.1:x", "", "[::1", "10.0.0.1:7373"] {
            assert!(!access.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_must_match_exactly() {
        let access = Access::new("abc".into(), "127.0.0.1".parse().unwrap(), 1);
        assert!(access.token_matches("abc"));
        assert!(!access.token_matches("abd"));
        assert!(!access.token_matches("ab"));
        assert!(!access.token_matches(""));
    }
}
