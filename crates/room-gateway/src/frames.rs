//! The JSON frames of PROTOCOL.md: client messages in, server frames out.
//! Event frames are encoded once per gateway and shared as bytes.

use bytestring::ByteString;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_proto::pb;

/// Error codes of PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotJoined,
    RateLimited,
    TooManyRooms,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::RateLimited => "rate_limited",
            Self::TooManyRooms => "too_many_rooms",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// Close codes of PROTOCOL.md.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const TOO_BIG: u16 = 1009;
    pub const RESTART: u16 = 1012;
    pub const ABUSE: u16 = 4000;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const RATE_LIMITED: u16 = 4029;
}

/// An error frame that answers a message (`ref`) or stands alone.
#[derive(Debug, Clone)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    pub room: Option<String>,
    pub field: Option<&'static str>,
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            room: None,
            field: None,
        }
    }

    pub fn bad_field(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(ErrorCode::BadRequest, message)
        }
    }

    pub fn in_room(mut self, room: &str) -> Self {
        self.room = Some(room.to_owned());
        self
    }

    pub fn to_json(&self, r#ref: Option<&Value>) -> Value {
        let mut v = json!({"type": "error", "code": self.code.as_str(), "message": self.message});
        if let Some(r) = r#ref {
            v["ref"] = r.clone();
        }
        if let Some(room) = &self.room {
            v["room"] = json!(room);
        }
        if let Some(field) = self.field {
            v["field"] = json!(field);
        }
        v
    }
}

/// Every client message: an object with `op` and an optional `id`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub op: Option<Value>,
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, Value>,
}

pub fn rfc3339_ms(ts_unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An encoded text frame. Cloning shares the bytes, and being text already,
/// it is written without another UTF-8 check per member.
pub type Frame = ByteString;

/// The `event` frame of a stored (`seq`/`prev`) or ephemeral event, encoded
/// once for every member. `data` is the JSON text the publisher sent, which
/// was validated where it entered.
pub fn event_frame(ev: &pb::RoomEvent, seq_prev: Option<(u64, u64)>) -> Frame {
    let data = if ev.data.is_empty() {
        "null"
    } else {
        std::str::from_utf8(&ev.data).unwrap_or("null")
    };
    let mut out = String::with_capacity(160 + ev.data.len());
    out.push_str(r#"{"type":"event","room":"#);
    push_json_str(&mut out, &ev.room);
    if let Some((seq, prev)) = seq_prev {
        out.push_str(&format!(r#","seq":{seq},"prev":{prev}"#));
    } else {
        out.push_str(r#","ephemeral":true"#);
    }
    out.push_str(r#","id":"#);
    push_json_str(&mut out, &ev.id);
    out.push_str(r#","event":"#);
    push_json_str(&mut out, &ev.event);
    out.push_str(r#","ts":""#);
    out.push_str(&rfc3339_ms(ev.ts_unix_ms));
    out.push_str(r#"","source":"#);
    push_json_str(&mut out, &ev.source);
    out.push_str(r#","data":"#);
    out.push_str(data);
    out.push('}');
    ByteString::from(out)
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings always serialize"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frame_is_valid_json_with_every_field() {
        let ev = pb::RoomEvent {
            id: "evt_1".into(),
            tenant: "acme".into(),
            room: "lobby".into(),
            event: "chat.message".into(),
            data: br#"{"text":"hi \"there\""}"#.to_vec(),
            source: "api".into(),
            ts_unix_ms: 1_700_000_000_123,
            ephemeral: false,
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&event_frame(&ev, Some((7, 3)))).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["prev"], 3);
        assert_eq!(v["data"]["text"], "hi \"there\"");
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
        let e: Value = serde_json::from_str(&event_frame(&ev, None)).unwrap();
        assert_eq!(e["ephemeral"], true);
        assert!(e.get("seq").is_none());
    }
}
