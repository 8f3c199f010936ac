//! Browser tokens (DESIGN.md §3): HS256 JWTs signed with the tenant's signing
//! secret (its UTF-8 bytes, no base64 decoding). Only HS256 is accepted; `none`
//! and every other algorithm are refused before any signature is looked at.
//!
//! Written here rather than taken from a JWT crate because we need exactly one
//! algorithm, the tenant must be read before the key is known, and the common
//! crates pull in RSA/EC stacks we would never use.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::names::{RoomName, RoomPattern, TenantId};

type HmacSha256 = Hmac<Sha256>;

/// What a token may do in rooms matching a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Permissions(u8);

impl Permissions {
    pub const READ: Self = Self(1);
    pub const PUBLISH: Self = Self(2);
    pub const SEND: Self = Self(4);
    pub const PRESENCE: Self = Self(8);
    pub const ADMIN: Self = Self(16);
    const NAMES: [(&'static str, Self); 5] = [
        ("read", Self::READ),
        ("publish", Self::PUBLISH),
        ("send", Self::SEND),
        ("presence", Self::PRESENCE),
        ("admin", Self::ADMIN),
    ];

    pub fn empty() -> Self {
        Self(0)
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
    }

    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(_, p)| self.0 & p.0 != 0)
            .map(|(n, _)| n)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.names().collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names.iter().try_fold(Self::empty(), |acc, n| {
            Self::parse(n).map(|p| acc.union(p)).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown permission {n:?} (one of read, publish, send, presence, admin)"
                ))
            })
        })
    }
}

/// The claims of a browser token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub tenant: TenantId,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub rooms: BTreeMap<RoomPattern, Permissions>,
}

impl Claims {
    /// Permissions on `room`: the union of every matching pattern's. No
    /// matching pattern grants nothing.
    pub fn permissions(&self, room: &RoomName) -> Permissions {
        self.rooms
            .iter()
            .filter(|(pattern, _)| pattern.matches(room))
            .fold(Permissions::empty(), |acc, (_, p)| acc.union(*p))
    }

    pub fn allows(&self, room: &RoomName, wanted: Permissions) -> bool {
        self.permissions(room).contains(wanted)
    }
}

/// Why a token was refused. The text is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a JWT (expected three base64url parts separated by '.')")]
    Malformed,
    #[error("token header is not valid JSON with an 'alg'")]
    BadHeader,
    #[error("token algorithm {0:?} is not accepted (only HS256)")]
    Algorithm(String),
    #[error("token claims are invalid: {0}")]
    BadClaims(String),
    #[error("token signature does not verify with the tenant's signing secret")]
    BadSignature,
    #[error("token expired at {0}")]
    Expired(i64),
    #[error("token names unknown tenant {0:?}")]
    UnknownTenant(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct TenantOnly {
    tenant: String,
}

fn split(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => Ok((h, p, s)),
        _ => Err(TokenError::Malformed),
    }
}

fn decode_part(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)
}

/// Reads the `tenant` claim without verifying anything, to find the key to
/// verify with. Never trust its answer beyond that.
pub fn peek_tenant(token: &str) -> Result<TenantId, TokenError> {
    let (_, payload, _) = split(token)?;
    let t: TenantOnly = serde_json::from_slice(&decode_part(payload)?)
        .map_err(|_| TokenError::BadClaims("claim 'tenant' is required".into()))?;
    TenantId::parse(t.tenant.clone()).map_err(|_| TokenError::UnknownTenant(t.tenant))
}

/// Verifies an HS256 token with `secret` and checks expiry against `now`
/// (Unix seconds).
pub fn verify(token: &str, secret: &[u8], now: i64) -> Result<Claims, TokenError> {
    let (header, payload, signature) = split(token)?;
    let h: Header =
        serde_json::from_slice(&decode_part(header)?).map_err(|_| TokenError::BadHeader)?;
    if h.alg != "HS256" {
        return Err(TokenError::Algorithm(h.alg));
    }
    let sig = decode_part(signature)?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&decode_part(payload)?)
        .map_err(|e| TokenError::BadClaims(e.to_string()))?;
    if claims.sub.is_empty() {
        return Err(TokenError::BadClaims(
            "claim 'sub' must not be empty".into(),
        ));
    }
    if claims.exp <= now {
        return Err(TokenError::Expired(claims.exp));
    }
    Ok(claims)
}

/// Signs claims as an HS256 JWT, as a tenant backend (or ingest) would.
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(claims).expect("claims always serialize to JSON"));
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        let mut rooms = BTreeMap::new();
        rooms.insert(
            RoomPattern::parse("quote:*").unwrap(),
            Permissions::READ.union(Permissions::PUBLISH),
        );
        Claims {
            sub: "u1".into(),
            tenant: TenantId::parse("acme").unwrap(),
            exp,
            iat: None,
            info: None,
            rooms,
        }
    }

    #[test]
    fn signed_token_verifies_and_grants_only_its_patterns() {
        let t = sign(&claims(2_000), b"secret");
        assert_eq!(peek_tenant(&t).unwrap().as_str(), "acme");
        let c = verify(&t, b"secret", 1_000).unwrap();
        assert!(c.allows(&RoomName::parse("quote:1").unwrap(), Permissions::PUBLISH));
        assert!(!c.allows(&RoomName::parse("quote:1").unwrap(), Permissions::SEND));
        assert!(!c.allows(&RoomName::parse("lobby").unwrap(), Permissions::READ));
    }

    #[test]
    fn wrong_key_expired_and_alg_none_are_refused() {
        let t = sign(&claims(2_000), b"secret");
        assert_eq!(verify(&t, b"other", 1_000), Err(TokenError::BadSignature));
        assert_eq!(
            verify(&t, b"secret", 2_000),
            Err(TokenError::Expired(2_000))
        );
        let (_, p, _) = split(&t).unwrap();
        let none = format!("{}.{p}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        assert_eq!(
            verify(&none, b"secret", 1_000),
            Err(TokenError::Algorithm("none".into()))
        );
    }

    #[test]
    fn unknown_permission_is_a_claims_error() {
        let raw = serde_json::json!({"sub":"u","tenant":"acme","exp":5,"rooms":{"a":["fly"]}});
        assert!(serde_json::from_value::<Claims>(raw).is_err());
    }
}
