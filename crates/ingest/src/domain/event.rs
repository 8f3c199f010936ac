//! An event as posted by a backend, validated field by field before anything
//! is published: a missing or unknown field, or one that breaks its rule,
//! is named with the rule.

use serde_json::Value;
use switchboard_platform::problem::Invalid;
use switchboard_proto::{EventName, RoomName, pb};

use super::fields::Fields;

pub const SOURCE_RULE: &str = "must be 1 to 128 characters from A-Z, a-z, 0-9 and _ - . : @ / (who sent it, e.g. an agent's name)";
const EVENT_RULE: &str = "an event name";
const EPHEMERAL_RULE: &str = "must be true or false";
const EVENTS_RULE: &str = "must be a list of events";

/// `POST …/rooms/{room}/events`: the event, and whether it is ephemeral (not
/// stored; sent to the room's current members only, without a seq).
pub fn parse_single(
    room: &str,
    body: &Value,
    max_data_bytes: usize,
) -> Result<(ValidEvent, bool), Invalid> {
    let f = Fields::object(body, "", "", &["event", "data", "source", "ephemeral"])?;
    let ephemeral = match f.get("ephemeral") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| f.invalid("ephemeral", EPHEMERAL_RULE))?,
    };
    let room = RoomName::parse(room)
        .map_err(|e| Invalid::new("room", format!("must match {}", e.rule)))?;
    Ok((ValidEvent::parse(&f, room, max_data_bytes)?, ephemeral))
}

/// `POST …/events` (batch): every event, in order, each with its room;
/// between 1 and `max_events` of them.
pub fn parse_batch(
    body: &Value,
    max_events: usize,
    max_data_bytes: usize,
) -> Result<Vec<ValidEvent>, Invalid> {
    let f = Fields::object(body, "", "", &["events"])?;
    let list = f.array("events", EVENTS_RULE)?;
    if list.is_empty() || list.len() > max_events {
        return Err(f.invalid("events", format!("must hold 1 to {max_events} events")));
    }
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            // Field names are formatted only on failure: a batch checks
            // thousands of events per second.
            let f = Fields::object(
                e,
                &format!("events[{i}]."),
                &format!("events[{i}]"),
                &["room", "event", "data", "source"],
            )?;
            let room = f.str("room", "a room name")?;
            let room = RoomName::parse(room)
                .map_err(|e| f.invalid("room", format!("must match {}", e.rule)))?;
            ValidEvent::parse(&f, room, max_data_bytes)
        })
        .collect()
}

fn valid_source(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@/".contains(&b))
}

/// A checked event ready to publish.
pub struct ValidEvent {
    pub room: RoomName,
    pub event: EventName,
    pub data: Vec<u8>,
    pub source: String,
}

impl ValidEvent {
    fn parse(f: &Fields<'_>, room: RoomName, max_data_bytes: usize) -> Result<Self, Invalid> {
        let name = f.str("event", EVENT_RULE)?;
        let event = EventName::parse(name)
            .map_err(|e| f.invalid("event", format!("must match {}", e.rule)))?;
        let data = f.get("data").cloned().unwrap_or(Value::Null);
        let data = serde_json::to_vec(&data).expect("a JSON value always serializes");
        if data.len() > max_data_bytes {
            return Err(f.invalid(
                "data",
                format!(
                    "must be at most {max_data_bytes} bytes of JSON (was {})",
                    data.len()
                ),
            ));
        }
        let source = match f.opt_str("source", SOURCE_RULE)? {
            None => "api".to_owned(),
            Some(s) if valid_source(s) => s.to_owned(),
            Some(_) => return Err(f.invalid("source", SOURCE_RULE)),
        };
        Ok(Self {
            room,
            event,
            data,
            source,
        })
    }

    pub fn into_proto(
        self,
        id: String,
        tenant: &str,
        ts_unix_ms: i64,
        ephemeral: bool,
    ) -> (RoomName, pb::RoomEvent) {
        let event = pb::RoomEvent {
            id,
            tenant: tenant.to_owned(),
            room: self.room.as_str().to_owned(),
            event: self.event.into_string(),
            data: self.data,
            source: self.source,
            ts_unix_ms,
            ephemeral,
            ..Default::default()
        };
        (self.room, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_field_is_checked_and_named() {
        let ok = parse_single("lobby", &json!({"event": "a.b", "source": "bot-7/v2"}), 100);
        assert!(ok.is_ok());
        let field = |body: Value| parse_single("lobby", &body, 100).err().map(|e| e.field);
        assert_eq!(field(json!({"data": 1})).as_deref(), Some("event"));
        assert_eq!(field(json!({"event": "a.b", "x": 1})).as_deref(), Some("x"));
        assert_eq!(
            field(json!({"event": "a.b", "source": "has space"})).as_deref(),
            Some("source")
        );
        assert_eq!(
            field(json!({"event": "a.b", "source": ""})).as_deref(),
            Some("source")
        );
        assert_eq!(
            field(json!({"event": "a.b", "ephemeral": "yes"})).as_deref(),
            Some("ephemeral")
        );
        assert_eq!(
            field(json!({"event": "a.b", "data": "x".repeat(200)})).as_deref(),
            Some("data")
        );
        assert_eq!(field(json!([1])).as_deref(), Some("body"));
        let batch = json!({"events": [{"room": "a", "event": "a.b"}, {"room": "a"}]});
        let e = parse_batch(&batch, 10, 100).err().unwrap();
        assert_eq!(e.field, "events[1].event");
        let e = parse_batch(&json!({"events": []}), 10, 100).err().unwrap();
        assert_eq!(e.field, "events");
    }
}
