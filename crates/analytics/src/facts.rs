//! Domain events as analytics reads them: a stored message of `SB_DOMAIN`
//! decoded into the fact it carries (`switchboard_proto::facts`), or the
//! reason it cannot be.

use chrono::{DateTime, Utc};
use prost::Message as _;
use switchboard_proto::facts::{ConnectionFact, SuggestionFact, TASK_EVENTS, TaskFact};
use switchboard_proto::{TenantId, pb};

use crate::repository::projection::SuggestionRow;

/// What a domain event is to analytics.
#[derive(Debug)]
pub enum Fact {
    Suggestion(SuggestionRow),
    Connection(ConnectionFact, bool),
    Task(TaskFact),
    /// A domain event analytics does not project.
    Other,
}

/// A domain event that cannot be read: it goes to the dead letters.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("not a DomainEvent message")]
    Envelope(#[source] prost::DecodeError),
    #[error("tenant '{0}' is not a tenant id")]
    Tenant(String),
    #[error("{event}: data is not the fact it should be")]
    Data {
        event: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{event}: '{field}' is not an RFC 3339 time")]
    Time { event: String, field: &'static str },
}

/// The tenant and fact of a stored domain event's payload.
pub fn decode(payload: &[u8]) -> Result<(TenantId, Fact), Undecodable> {
    let ev = pb::DomainEvent::decode(payload).map_err(Undecodable::Envelope)?;
    let tenant =
        TenantId::parse(ev.tenant.clone()).map_err(|_| Undecodable::Tenant(ev.tenant.clone()))?;
    let data = |event: &str| {
        let event = event.to_owned();
        move |source| Undecodable::Data { event, source }
    };
    let fact = match ev.name.as_str() {
        "suggestion.created" | "suggestion.updated" => {
            let f: SuggestionFact = serde_json::from_slice(&ev.data).map_err(data(&ev.name))?;
            let time = |s: &str, field| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| Undecodable::Time {
                        event: ev.name.clone(),
                        field,
                    })
            };
            Fact::Suggestion(SuggestionRow {
                tenant_id: tenant.to_string(),
                created_at: time(&f.created_at, "created_at")?,
                updated_at: time(&f.updated_at, "updated_at")?,
                id: f.id,
                agent_type: f.agent_type,
                priority: f.priority,
                status: f.status,
                estimated_revenue: f.estimated_revenue,
                confidence_score: f.confidence_score,
            })
        }
        "connection.opened" | "connection.closed" => {
            let f: ConnectionFact = serde_json::from_slice(&ev.data).map_err(data(&ev.name))?;
            Fact::Connection(f, ev.name == "connection.closed")
        }
        name if TASK_EVENTS.contains(&name) => {
            Fact::Task(serde_json::from_slice(&ev.data).map_err(data(&ev.name))?)
        }
        _ => Fact::Other,
    };
    Ok((tenant, fact))
}
