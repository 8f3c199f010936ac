//! An event as posted by a backend, validated field by field before anything
//! is published.

use serde::Deserialize;
use switchboard_platform::Problem;
use switchboard_proto::{EventName, RoomName, pb};

/// `POST …/rooms/{room}/events` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    pub event: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub source: Option<String>,
    /// Not stored: sent to the room's current members only (no seq).
    #[serde(default)]
    pub ephemeral: bool,
}

/// One item of `POST …/events` (batch).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRoomEvent {
    pub room: String,
    pub event: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    pub events: Vec<NewRoomEvent>,
}

pub const SOURCE_RULE: &str = "1 to 128 characters";

/// A checked event ready to publish.
pub struct ValidEvent {
    pub room: RoomName,
    pub event: EventName,
    pub data: Vec<u8>,
    pub source: String,
}

impl ValidEvent {
    /// `index` is the event's place in a batch (`None` for a single event),
    /// so errors point at the exact field (`event`, `events[3].event`).
    pub fn parse(
        index: Option<usize>,
        room: &str,
        event: &str,
        data: &serde_json::Value,
        source: Option<&str>,
        max_data_bytes: usize,
    ) -> Result<Self, Problem> {
        // Field names are formatted only on failure: a batch checks
        // thousands of events per second.
        let field = |name: &str| match index {
            None => name.to_owned(),
            Some(i) => format!("events[{i}].{name}"),
        };
        let room = RoomName::parse(room)
            .map_err(|e| Problem::invalid(field("room"), format!("must match {}", e.rule)))?;
        let event = EventName::parse(event)
            .map_err(|e| Problem::invalid(field("event"), format!("must match {}", e.rule)))?;
        let data = serde_json::to_vec(data).expect("a JSON value always serializes");
        if data.len() > max_data_bytes {
            return Err(Problem::invalid(
                field("data"),
                format!(
                    "must be at most {max_data_bytes} bytes of JSON (was {})",
                    data.len()
                ),
            ));
        }
        let source = match source {
            None => "api".to_owned(),
            Some(s) if !s.is_empty() && s.chars().count() <= 128 => s.to_owned(),
            Some(_) => return Err(Problem::invalid(field("source"), SOURCE_RULE)),
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
