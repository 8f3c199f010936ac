//! Who is calling a service's HTTP API: a tenant's server, with an API key
//! (its owner asked of ingest, which owns the keys, and cached), or a
//! browser, with the same JWT the socket takes (DESIGN.md §3), checked the
//! same way. An endpoint then says what it needs of the caller
//! ([`Caller::require_room`]); refusals name what is missing.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use switchboard_proto::token::{self, Claims, Permissions, TokenError};
use switchboard_proto::{RoomName, TenantId};

use crate::apikeys::{self, AskError, KeyCache};
use crate::problem::{Invalid, Problem};
use crate::tenants::TenantDirectory;

/// A browser token is told apart from an API key by its form: API keys
/// start with this.
const API_KEY_PREFIX: &str = "sk_";

/// Verifies a browser token `raw` with the secrets of the tenant it names.
pub fn verify_token(raw: &str, tenants: &TenantDirectory, now: i64) -> Result<Claims, TokenError> {
    let tenant = token::peek_tenant(raw)?;
    let config = tenants
        .get(&tenant)
        .ok_or_else(|| TokenError::UnknownTenant(tenant.to_string()))?;
    let mut last = TokenError::BadSignature;
    for key in &config.signing_keys {
        match token::verify(raw, key.as_bytes(), now) {
            Ok(claims) if claims.tenant == tenant => return Ok(claims),
            Ok(_) => return Err(TokenError::BadSignature),
            Err(TokenError::BadSignature) => continue,
            Err(e) => {
                last = e;
                break;
            }
        }
    }
    Err(last)
}

/// What a service needs to tell callers apart.
#[derive(Clone)]
pub struct Callers {
    pub tenants: TenantDirectory,
    pub keys: KeyCache,
    pub nats: async_nats::Client,
}

/// A caller, admitted for the tenant of the path.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The tenant's server (any API key of the tenant).
    Server(TenantId),
    /// A browser, with its token's claims.
    Browser(Arc<Claims>),
}

#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error(transparent)]
    Tenant(Invalid),
    #[error(
        "missing 'Authorization: Bearer …' header: the tenant's API key (sk_…) or a browser token"
    )]
    Missing,
    #[error("API key is not valid or was revoked")]
    KeyInvalid,
    #[error("browser token refused: {0}")]
    Token(#[source] TokenError),
    #[error("this {what} belongs to tenant '{owner}', not '{tenant}'")]
    OtherTenant {
        what: &'static str,
        owner: String,
        tenant: TenantId,
    },
    #[error("the token does not grant '{permission}' on room '{room}'")]
    Forbidden {
        permission: &'static str,
        room: String,
    },
    #[error("API keys cannot be checked right now")]
    Unchecked(#[source] AskError),
}

impl CallerError {
    /// The problem the client gets.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Tenant(e) => e.into(),
            Self::Missing | Self::KeyInvalid | Self::Token(_) => {
                Problem::unauthorized(self.to_string())
            }
            Self::OtherTenant { .. } | Self::Forbidden { .. } => {
                Problem::forbidden(self.to_string())
            }
            Self::Unchecked(_) => Problem::unavailable(
                "API keys cannot be checked right now (ingest does not answer); retry",
            ),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl Callers {
    /// Who calls for `tenant` (the path's), from the request's headers.
    pub async fn identify(&self, headers: &HeaderMap, tenant: &str) -> Result<Caller, CallerError> {
        let tenant = TenantId::parse(tenant).map_err(|e| {
            CallerError::Tenant(Invalid::new("tenant", format!("must match {}", e.rule)))
        })?;
        let raw = bearer(headers).ok_or(CallerError::Missing)?;
        if raw.starts_with(API_KEY_PREFIX) {
            let hash = apikeys::hash_key(raw);
            let owner = match self.keys.get(&hash) {
                Some(owner) => owner,
                None => {
                    let owner = apikeys::ask_owner(&self.nats, &hash)
                        .await
                        .map_err(CallerError::Unchecked)?;
                    self.keys.put(&hash, owner.clone());
                    owner
                }
            };
            return match owner {
                Some(o) if o == tenant.as_str() => Ok(Caller::Server(tenant)),
                Some(o) => Err(CallerError::OtherTenant {
                    what: "API key",
                    owner: o,
                    tenant,
                }),
                None => Err(CallerError::KeyInvalid),
            };
        }
        // A tenant created a moment ago may not have reached the watch yet.
        if let Ok(t) = token::peek_tenant(raw) {
            self.tenants.get_or_fetch(&t).await;
        }
        let claims = verify_token(raw, &self.tenants, chrono_now()).map_err(CallerError::Token)?;
        if claims.tenant != tenant {
            return Err(CallerError::OtherTenant {
                what: "token",
                owner: claims.tenant.to_string(),
                tenant,
            });
        }
        Ok(Caller::Browser(Arc::new(claims)))
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Caller {
    pub fn tenant(&self) -> &TenantId {
        match self {
            Self::Server(t) => t,
            Self::Browser(c) => &c.tenant,
        }
    }

    /// A server may do anything for its tenant; a browser needs
    /// `permission` on `room`.
    pub fn require_room(&self, room: &str, permission: Permissions) -> Result<(), CallerError> {
        let Self::Browser(claims) = self else {
            return Ok(());
        };
        let allowed = RoomName::parse(room)
            .map(|r| claims.allows(&r, permission))
            .unwrap_or(false);
        if allowed {
            Ok(())
        } else {
            Err(CallerError::Forbidden {
                permission: permission_name(permission),
                room: room.to_owned(),
            })
        }
    }
}

fn permission_name(p: Permissions) -> &'static str {
    [
        (Permissions::READ, "read"),
        (Permissions::PUBLISH, "publish"),
        (Permissions::SEND, "send"),
        (Permissions::PRESENCE, "presence"),
        (Permissions::ADMIN, "admin"),
    ]
    .into_iter()
    .find(|(q, _)| *q == p)
    .map_or("that permission", |(_, n)| n)
}
