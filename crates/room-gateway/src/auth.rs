//! Who is connecting: the browser token, taken from the subprotocol list
//! (`bearer.<jwt>`), the `Authorization` header, or `?token=` (PROTOCOL.md),
//! verified against the tenant's signing secrets.

use actix_web::http::header::{self, HeaderMap};
use switchboard_platform::Problem;
use switchboard_proto::token::TokenError;

pub const SUBPROTOCOL: &str = "switchboard.v1";
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The raw token of a connection request (its headers and query string),
/// wherever the client put it.
pub fn token_from_request(headers: &HeaderMap, query: &str) -> Option<String> {
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        if let Ok(list) = value.to_str()
            && let Some(t) = list
                .split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        {
            return Some(t.to_owned());
        }
    }
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim().to_owned());
    }
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// Verifies `raw` with the secrets of the tenant it names.
pub use switchboard_platform::callers::verify_token as verify;

/// The `401` a refused connection gets, before any upgrade.
pub fn refuse(e: &TokenError) -> Problem {
    Problem::unauthorized(format!("{e}"))
}

pub fn missing_token() -> Problem {
    Problem::unauthorized(
        "no token: send it as subprotocol 'bearer.<jwt>', as 'Authorization: Bearer <jwt>', or as ?token=<jwt>",
    )
}

/// Whether the client offered [`SUBPROTOCOL`] (the server then answers it).
pub fn offers_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}
