//! PROTOCOL.md as types: the client messages a gateway accepts, the frames
//! it sends, and its error and close codes. Field names live here and only
//! here, so the protocol page can be checked against this one file.
//!
//! Client messages are parsed by hand rather than derived: every error must
//! name the op, the field and the rule (`join: field 'room' is required …`),
//! which serde's messages cannot.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::{Map, Value};
use switchboard_proto::names::{EVENT_FILTER_RULE, EVENT_RULE, EventFilter, ROOM_RULE};
use switchboard_proto::{EventName, RoomName, pb};

/// Version in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A server text frame as it goes on the wire: the WebSocket header and the
/// JSON text in one buffer, encoded once. Cloning shares the bytes, and a
/// frame is written to each socket as it is — one buffer, one `send()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Frames `json` (final, unmasked, opcode text).
    pub fn text(json: &str) -> Self {
        let mut out = BytesMut::with_capacity(json.len() + 10);
        let mut head = [0u8; 10];
        let n = crate::wire::frame_header(&mut head, actix_http::ws::OpCode::Text, json.len());
        out.put_slice(&head[..n]);
        out.put_slice(json.as_bytes());
        Self(out.freeze())
    }

    /// The bytes to write, header included.
    pub fn wire(&self) -> &Bytes {
        &self.0
    }

    pub fn into_wire(self) -> Bytes {
        self.0
    }

    /// The JSON text the frame carries.
    pub fn json(&self) -> &str {
        let n = match self.0.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        std::str::from_utf8(&self.0[n..]).expect("frames are made from JSON text")
    }
}

// ---------------------------------------------------------------------------
// Codes

/// Error codes of PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotJoined,
    RateLimited,
    TooManyRooms,
    Unavailable,
    Internal,
}

/// Close codes of PROTOCOL.md (and RFC 6455's 1002 for broken framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    ProtocolError = 1002,
    TooBig = 1009,
    Restart = 1012,
    Abuse = 4000,
    TokenExpired = 4001,
    Disconnected = 4003,
    SlowConsumer = 4008,
    RateLimited = 4029,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Normal,
            Self::ProtocolError,
            Self::TooBig,
            Self::Restart,
            Self::Abuse,
            Self::TokenExpired,
            Self::Disconnected,
            Self::SlowConsumer,
            Self::RateLimited,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

// ---------------------------------------------------------------------------
// Client → server

/// The `id` a client chose for a message (a string or an integer), copied
/// into `ref` on the reply.
pub type MsgId = Value;

/// One client message: its op and its `id`.
#[derive(Debug)]
pub struct ClientMessage {
    pub id: Option<MsgId>,
    pub op: ClientOp,
}

#[derive(Debug)]
pub enum ClientOp {
    Join(Join),
    Leave {
        room: RoomName,
    },
    Filter {
        room: RoomName,
        types: Vec<EventFilter>,
    },
    Publish(Publish),
    Send(Send),
    Presence {
        room: RoomName,
    },
    Ping,
    Refresh {
        token: String,
    },
}

#[derive(Debug)]
pub struct Join {
    pub room: RoomName,
    /// The last seq the client holds in the room.
    pub since: Option<u64>,
    pub types: Vec<EventFilter>,
}

#[derive(Debug)]
pub struct Publish {
    pub room: RoomName,
    pub event: EventName,
    /// The JSON text of `data` (`null` when absent).
    pub data: String,
    pub key: Option<String>,
    pub ephemeral: bool,
    pub echo: bool,
}

#[derive(Debug)]
pub struct Send {
    pub room: RoomName,
    pub event: EventName,
    pub data: String,
    pub key: Option<String>,
}

/// A message that could not be understood: the error frame answering it.
#[derive(Debug)]
pub struct Rejected {
    pub id: Option<MsgId>,
    pub error: ErrorFrame,
}

/// The ops of PROTOCOL.md, for the unknown-op message.
const OPS: &str = "join, leave, filter, publish, send, presence, ping, refresh";

impl ClientMessage {
    pub fn parse(text: &str) -> Result<Self, Rejected> {
        let no_id = |error| Rejected { id: None, error };
        let value: Value = serde_json::from_str(text).map_err(|e| {
            no_id(ErrorFrame::new(
                ErrorCode::BadRequest,
                format!("message is not JSON: {e}"),
            ))
        })?;
        let Value::Object(mut fields) = value else {
            return Err(no_id(ErrorFrame::new(
                ErrorCode::BadRequest,
                "message must be a JSON object with an 'op'",
            )));
        };
        let id = match fields.remove("id") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::String(_) | Value::Number(_))) if is_id(&v) => Some(v),
            Some(_) => {
                return Err(no_id(ErrorFrame::bad_field(
                    "id",
                    "field 'id' must be a string or an integer",
                )));
            }
        };
        let f = Fields(fields);
        let op = match f.get("op").and_then(Value::as_str) {
            Some(op) => op.to_owned(),
            None => {
                return Err(Rejected {
                    id,
                    error: ErrorFrame::bad_field(
                        "op",
                        "field 'op' is required (a string such as \"join\")",
                    ),
                });
            }
        };
        match f.op(&op) {
            Ok(op) => Ok(Self { id, op }),
            Err(error) => Err(Rejected { id, error }),
        }
    }
}

/// What an id may be: a string, or an integer that fits 64 bits.
fn is_id(v: &Value) -> bool {
    v.is_string() || v.is_i64() || v.is_u64()
}

/// A client message's fields, read with errors that name the op and rule.
struct Fields(Map<String, Value>);

impl Fields {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn op(&self, op: &str) -> Result<ClientOp, ErrorFrame> {
        Ok(match op {
            "join" => {
                let room = self.room(op)?;
                let since = match self.get("since") {
                    None => None,
                    Some(v) => Some(v.as_u64().ok_or_else(|| {
                        ErrorFrame::bad_field(
                            "since",
                            "join: field 'since' must be a whole number (the last seq you hold)",
                        )
                        .in_room(&room)
                    })?),
                };
                let types = self.types(op, false).map_err(|e| e.in_room(&room))?;
                ClientOp::Join(Join { room, since, types })
            }
            "leave" => ClientOp::Leave {
                room: self.room(op)?,
            },
            "filter" => {
                let room = self.room(op)?;
                let types = self.types(op, true).map_err(|e| e.in_room(&room))?;
                ClientOp::Filter { room, types }
            }
            "publish" => {
                let room = self.room(op)?;
                let event = self.event(op, &room)?;
                if !event.as_str().starts_with("client.") {
                    return Err(ErrorFrame::bad_field(
                        "event",
                        "publish: field 'event' must start with 'client.' (e.g. client.typing); other events come from backends",
                    )
                    .in_room(&room));
                }
                ClientOp::Publish(Publish {
                    key: self.key(op)?,
                    ephemeral: self.flag(op, "ephemeral", false)?,
                    echo: self.flag(op, "echo", true)?,
                    data: self.data(),
                    room,
                    event,
                })
            }
            "send" => {
                let room = self.room(op)?;
                let event = self.event(op, &room)?;
                ClientOp::Send(Send {
                    key: self.key(op)?,
                    data: self.data(),
                    room,
                    event,
                })
            }
            "presence" => ClientOp::Presence {
                room: self.room(op)?,
            },
            "ping" => ClientOp::Ping,
            "refresh" => {
                let token = self.get("token").and_then(Value::as_str).ok_or_else(|| {
                    ErrorFrame::bad_field("token", "refresh: field 'token' is required (a JWT)")
                })?;
                ClientOp::Refresh {
                    token: token.to_owned(),
                }
            }
            other => {
                return Err(ErrorFrame::bad_field(
                    "op",
                    format!("unknown op '{other}' (one of {OPS})"),
                ));
            }
        })
    }

    fn room(&self, op: &str) -> Result<RoomName, ErrorFrame> {
        let raw = self.get("room").and_then(Value::as_str).ok_or_else(|| {
            ErrorFrame::bad_field(
                "room",
                format!("{op}: field 'room' is required (a room name matching {ROOM_RULE})"),
            )
        })?;
        RoomName::parse(raw).map_err(|_| {
            ErrorFrame::bad_field(
                "room",
                format!("{op}: field 'room' must be a room name matching {ROOM_RULE}"),
            )
            .in_room(raw)
        })
    }

    fn event(&self, op: &str, room: &RoomName) -> Result<EventName, ErrorFrame> {
        let raw = self.get("event").and_then(Value::as_str).ok_or_else(|| {
            ErrorFrame::bad_field(
                "event",
                format!("{op}: field 'event' is required (an event name matching {EVENT_RULE})"),
            )
            .in_room(room)
        })?;
        EventName::parse(raw).map_err(|_| {
            ErrorFrame::bad_field(
                "event",
                format!("{op}: field 'event' must match {EVENT_RULE}"),
            )
            .in_room(room)
        })
    }

    /// `types`: required by `filter` (`[]` for all), optional on `join`.
    fn types(&self, op: &str, required: bool) -> Result<Vec<EventFilter>, ErrorFrame> {
        let Some(v) = self.get("types") else {
            if required {
                return Err(ErrorFrame::bad_field(
                    "types",
                    format!(
                        "{op}: field 'types' is required (an array of event filters; [] for all events)"
                    ),
                ));
            }
            return Ok(Vec::new());
        };
        let bad = || {
            ErrorFrame::bad_field(
                "types",
                format!(
                    "{op}: field 'types' must be an array of event filters, each {EVENT_FILTER_RULE}"
                ),
            )
        };
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|t| {
                t.as_str()
                    .and_then(|s| EventFilter::parse(s).ok())
                    .ok_or_else(bad)
            })
            .collect()
    }

    fn key(&self, op: &str) -> Result<Option<String>, ErrorFrame> {
        match self.get("key") {
            None => Ok(None),
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.clone())),
            Some(_) => Err(ErrorFrame::bad_field(
                "key",
                format!("{op}: field 'key' must be a string of 1 to 255 characters"),
            )),
        }
    }

    fn flag(&self, op: &str, name: &'static str, default: bool) -> Result<bool, ErrorFrame> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ErrorFrame::bad_field(
                name,
                format!("{op}: field '{name}' must be true or false"),
            )),
        }
    }

    /// `data` as JSON text, as it will be stored and sent (`null` if absent).
    fn data(&self) -> String {
        self.0.get("data").unwrap_or(&Value::Null).to_string()
    }
}

// ---------------------------------------------------------------------------
// Server → client

/// An error frame that answers a message (`ref`) or stands alone.
#[derive(Debug, Clone, PartialEq)]
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

    pub fn in_room(mut self, room: impl AsRef<str>) -> Self {
        self.room = Some(room.as_ref().to_owned());
        self
    }

    pub fn forbidden(op: &str, room: &RoomName, permission: &str) -> Self {
        Self::new(
            ErrorCode::Forbidden,
            format!("{op}: your token does not grant '{permission}' on room '{room}'"),
        )
        .in_room(room)
    }

    pub fn not_joined(op: &str, room: &RoomName) -> Self {
        Self::new(
            ErrorCode::NotJoined,
            format!("{op}: this connection has not joined room '{room}'"),
        )
        .in_room(room)
    }

    pub fn unavailable(op: &str, room: &RoomName) -> Self {
        Self::new(
            ErrorCode::Unavailable,
            format!(
                "{op}: the message broker is unreachable; nothing was stored, retry later with the same key"
            ),
        )
        .in_room(room)
    }

    pub fn frame<'a>(&'a self, r#ref: Option<&'a MsgId>) -> ServerFrame<'a> {
        ServerFrame::Error {
            r#ref,
            code: self.code,
            message: &self.message,
            room: self.room.as_deref(),
            field: self.field,
        }
    }
}

/// One presence member as the `presence` frame lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PresenceMember {
    pub sub: String,
    pub info: Value,
    pub conns: usize,
}

/// Every server frame but `event` (see [`EventFrame`]), as PROTOCOL.md has
/// them.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        protocol: u32,
        conn_id: &'a str,
        tenant: &'a str,
        sub: &'a str,
        heartbeat_ms: u64,
        max_frame_bytes: usize,
        ephemeral_interval_ms: u64,
        token_exp: i64,
    },
    Joined {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
        room: &'a str,
        seq: u64,
        /// Only when the join gave `since`.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        missed: Option<usize>,
    },
    Left {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    Ok {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
    },
    State {
        room: &'a str,
        seq: u64,
        data: &'a Value,
    },
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
        room: &'a str,
        /// Stored events only; an ephemeral publish is acked without.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        id: &'a str,
    },
    Presence {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
        room: &'a str,
        members: &'a [PresenceMember],
    },
    Pong {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
        ts: &'a str,
    },
    Refreshed {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
        token_exp: i64,
    },
    TokenExpiring {
        token_exp: i64,
    },
    Reconnect {
        reason: &'a str,
        after_ms: u64,
    },
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a MsgId>,
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<&'static str>,
    },
}

impl ServerFrame<'_> {
    pub fn encode(&self) -> Frame {
        Frame::text(&serde_json::to_string(self).expect("server frames always serialize"))
    }
}

pub fn rfc3339_ms(ts_unix_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_unix_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ---------------------------------------------------------------------------
// Event frames: encoded once per gateway, shared by every member

/// The `event` frame of a room event, encoded once for every member. A
/// stored event's `prev` can be rewritten without encoding it again (a
/// filtered member's chain, DESIGN.md §2 and PROTOCOL.md): the frame
/// remembers where its `prev` digits sit in the JSON.
#[derive(Debug, Clone)]
pub struct EventFrame {
    frame: Frame,
    /// Byte range of the `prev` digits in the JSON; empty for an ephemeral
    /// event.
    prev_at: u32,
    prev_len: u8,
    prev: u64,
}

impl EventFrame {
    /// Encodes a stored (`Some((seq, prev))`) or ephemeral event. `data` is
    /// the JSON text the publisher sent, validated where it entered.
    pub fn encode(ev: &pb::RoomEvent, seq_prev: Option<(u64, u64)>) -> Self {
        let data = if ev.data.is_empty() {
            "null"
        } else {
            std::str::from_utf8(&ev.data).unwrap_or("null")
        };
        let mut out = String::with_capacity(160 + ev.data.len());
        out.push_str(r#"{"type":"event","room":"#);
        push_json_str(&mut out, &ev.room);
        let (mut prev_at, mut prev_len, mut prev) = (0, 0, 0);
        if let Some((seq, p)) = seq_prev {
            out.push_str(r#","seq":"#);
            out.push_str(itoa::Buffer::new().format(seq));
            out.push_str(r#","prev":"#);
            prev_at = out.len() as u32;
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(p);
            prev_len = digits.len() as u8;
            prev = p;
            out.push_str(digits);
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
        Self {
            frame: Frame::text(&out),
            prev_at,
            prev_len,
            prev,
        }
    }

    /// The frame with the `prev` it was encoded with.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The `prev` it was encoded with (0 for an ephemeral event).
    pub fn prev(&self) -> u64 {
        self.prev
    }

    /// The same frame with another `prev` (the bytes are shared when it is
    /// the one encoded).
    pub fn with_prev(&self, prev: u64) -> Frame {
        if prev == self.prev || self.prev_len == 0 {
            return self.frame.clone();
        }
        let (head, tail) = self.frame.json().split_at(self.prev_at as usize);
        let tail = &tail[self.prev_len as usize..];
        let mut out = String::with_capacity(head.len() + tail.len() + 20);
        out.push_str(head);
        out.push_str(itoa::Buffer::new().format(prev));
        out.push_str(tail);
        Frame::text(&out)
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).expect("strings always serialize"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> pb::RoomEvent {
        pb::RoomEvent {
            id: "evt_1".into(),
            tenant: "acme".into(),
            room: "user:42".into(),
            event: "chat.message".into(),
            data: br#"{"text":"hi \"there\""}"#.to_vec(),
            source: "api".into(),
            ts_unix_ms: 1_700_000_000_123,
            ..Default::default()
        }
    }

    #[test]
    fn event_frames_carry_every_field_of_protocol_md() {
        let f = EventFrame::encode(&event(), Some((7, 3)));
        let v: Value = serde_json::from_str(f.frame().json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "event", "room": "user:42", "seq": 7, "prev": 3,
                "id": "evt_1", "event": "chat.message", "ts": "2023-11-14T22:13:20.123Z",
                "source": "api", "data": {"text": "hi \"there\""}})
        );
        let e: Value =
            serde_json::from_str(EventFrame::encode(&event(), None).frame().json()).unwrap();
        assert_eq!(e["ephemeral"], true);
        assert!(e.get("seq").is_none() && e.get("prev").is_none());
    }

    #[test]
    fn prev_is_rewritten_in_place() {
        let f = EventFrame::encode(&event(), Some((1_000, 7)));
        for prev in [0, 7, 8, 999, 123_456_789] {
            let v: Value = serde_json::from_str(f.with_prev(prev).json()).unwrap();
            assert_eq!(
                (v["seq"].as_u64(), v["prev"].as_u64()),
                (Some(1_000), Some(prev))
            );
            assert_eq!(v["data"]["text"], "hi \"there\"");
        }
        assert!(std::ptr::eq(
            f.with_prev(7).wire().as_ptr(),
            f.frame().wire().as_ptr()
        ));
    }

    #[test]
    fn client_messages_are_typed_and_errors_name_the_field() {
        let m = ClientMessage::parse(
            r#"{"op":"join","room":"quote:9","since":4,"types":["task.*"],"id":1}"#,
        )
        .unwrap();
        assert_eq!(m.id, Some(serde_json::json!(1)));
        let ClientOp::Join(j) = m.op else { panic!() };
        assert_eq!(
            (j.room.as_str(), j.since, j.types.len()),
            ("quote:9", Some(4), 1)
        );

        let bad = |text: &str| ClientMessage::parse(text).unwrap_err();
        let e = bad(r#"{"op":"join","id":"a"}"#);
        assert_eq!(
            (e.id, e.error.field),
            (Some(serde_json::json!("a")), Some("room"))
        );
        assert!(
            e.error
                .message
                .starts_with("join: field 'room' is required")
        );
        assert_eq!(
            bad(r#"{"op":"publish","room":"r","event":"x.y"}"#)
                .error
                .field,
            Some("event")
        );
        assert_eq!(
            bad(r#"{"op":"filter","room":"r"}"#).error.field,
            Some("types")
        );
        assert_eq!(bad(r#"{"op":"nope"}"#).error.field, Some("op"));
        assert_eq!(bad(r#"{"id":{"x":1},"op":"ping"}"#).error.field, Some("id"));
        assert_eq!(bad("[1]").error.code, ErrorCode::BadRequest);
        let p = ClientMessage::parse(
            r#"{"op":"publish","room":"r","event":"client.x","data":{"a":1},"echo":false}"#,
        )
        .unwrap();
        let ClientOp::Publish(p) = p.op else { panic!() };
        assert_eq!(
            (p.data.as_str(), p.echo, p.ephemeral),
            (r#"{"a":1}"#, false, false)
        );
    }

    #[test]
    fn server_frames_serialize_as_protocol_md_says() {
        let id = serde_json::json!("j1");
        let joined = ServerFrame::Joined {
            r#ref: Some(&id),
            room: "r",
            seq: 9,
            recovered: None,
            missed: None,
        };
        assert_eq!(
            serde_json::from_str::<Value>(joined.encode().json()).unwrap(),
            serde_json::json!({"type": "joined", "ref": "j1", "room": "r", "seq": 9})
        );
        let e = ErrorFrame::bad_field("room", "m").in_room("r");
        assert_eq!(
            serde_json::from_str::<Value>(e.frame(None).encode().json()).unwrap(),
            serde_json::json!({"type": "error", "code": "bad_request", "message": "m", "room": "r", "field": "room"})
        );
        let t = ServerFrame::TokenExpiring { token_exp: 5 };
        assert!(t.encode().json().contains(r#""type":"token_expiring""#));
        // Long frames take the longer header, and json() finds the text.
        let long = Frame::text(&format!("\"{}\"", "x".repeat(70_000)));
        assert_eq!(long.wire()[1], 127);
        assert_eq!(long.json().len(), 70_002);
    }
}
