//! The token's lifecycle: `token_expiring` 30 s before `exp`, close (4001)
//! at `exp`, and `refresh` — a new token for the same tenant and sub, which
//! takes the connection out of rooms it no longer grants.

use std::pin::Pin;
use std::time::Duration;

use switchboard_proto::RoomName;
use switchboard_proto::token::Permissions;
use tokio::time::{Instant, Sleep};

use super::Session;
use crate::protocol::{ErrorFrame, MsgId, ServerFrame};

/// `token_expiring` comes this long before `exp`.
const TOKEN_WARNING: Duration = Duration::from_secs(30);

fn deadline_of(exp: i64, before: Duration) -> Instant {
    let left = exp - chrono::Utc::now().timestamp();
    let left = Duration::from_secs(left.max(0) as u64).saturating_sub(before);
    Instant::now() + left
}

/// The two deadlines of the connection's token.
pub(super) struct TokenTimers {
    exp: i64,
    warned: bool,
    expiring: Pin<Box<Sleep>>,
    expiry: Pin<Box<Sleep>>,
}

impl TokenTimers {
    pub fn new(exp: i64) -> Self {
        Self {
            exp,
            warned: false,
            expiring: Box::pin(tokio::time::sleep_until(deadline_of(exp, TOKEN_WARNING))),
            expiry: Box::pin(tokio::time::sleep_until(deadline_of(exp, Duration::ZERO))),
        }
    }

    /// Follows a refreshed token (`exp` changed: true), warned afresh.
    pub fn follow(&mut self, exp: i64) -> bool {
        if exp == self.exp {
            return false;
        }
        self.exp = exp;
        self.warned = false;
        self.expiring
            .as_mut()
            .reset(deadline_of(exp, TOKEN_WARNING));
        self.expiry.as_mut().reset(deadline_of(exp, Duration::ZERO));
        true
    }

    pub fn exp(&self) -> i64 {
        self.exp
    }

    /// The next deadline: the warning (once per token), then expiry.
    pub async fn next(&mut self) -> Due {
        if !self.warned {
            tokio::select! {
                biased;
                _ = self.expiry.as_mut() => return Due::Expired,
                _ = self.expiring.as_mut() => {
                    self.warned = true;
                    return Due::Warn;
                }
            }
        }
        self.expiry.as_mut().await;
        Due::Expired
    }
}

/// Which of the token's deadlines came.
pub(super) enum Due {
    /// Send `token_expiring`.
    Warn,
    /// Close with 4001.
    Expired,
}

/// A bad token in `refresh`: its error frame, then close 4001.
pub(super) struct Refused(pub ErrorFrame);

impl Session {
    /// A new token for the same tenant and sub. Rooms it no longer grants
    /// are left (with a `left` frame), presence rights re-read.
    pub(super) async fn refresh(&mut self, raw: &str, id: Option<&MsgId>) -> Result<(), Refused> {
        let refused = |m: String| Refused(ErrorFrame::bad_field("token", m));
        let claims = crate::auth::verify(raw, &self.gw.tenants, chrono::Utc::now().timestamp())
            .map_err(|e| refused(format!("refresh: {e}")))?;
        if claims.tenant != self.claims.tenant || claims.sub != self.claims.sub {
            return Err(refused(
                "refresh: the new token must have the same tenant and sub".into(),
            ));
        }
        self.claims = claims;
        let rooms: Vec<RoomName> = self.rooms.iter().cloned().collect();
        for room in rooms {
            let perms = self.claims.permissions(&room);
            if perms.contains(Permissions::READ) {
                self.gw.hub.set_presence(
                    &self.claims.tenant,
                    &room,
                    &self.conn.id,
                    perms.contains(Permissions::PRESENCE),
                );
            } else {
                self.rooms.remove(&room);
                self.depart(&room).await;
                self.push(&ServerFrame::Left {
                    r#ref: None,
                    room: room.as_str(),
                    reason: Some("the refreshed token does not grant read"),
                });
            }
        }
        self.push(&ServerFrame::Refreshed {
            r#ref: id,
            token_exp: self.claims.exp,
        });
        Ok(())
    }
}
