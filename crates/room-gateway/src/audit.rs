//! `connection.opened` / `connection.closed` domain events, for the
//! connection audit in analytics. Sent in the background: an audit record
//! never delays a socket.

use prost::Message as _;
use switchboard_platform::nats::Bus;
use switchboard_proto::token::Claims;
use switchboard_proto::{EventName, pb, subjects};

/// Where a connection came from, captured at the upgrade.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    pub ip: String,
    pub user_agent: String,
    pub opened_at_ms: i64,
}

fn publish(bus: &Bus, claims: &Claims, name: &'static str, data: serde_json::Value) {
    let name = EventName::parse(name).expect("audit event names follow the rule");
    let ev = pb::DomainEvent {
        id: format!("dom_{}", uuid::Uuid::now_v7().simple()),
        tenant: claims.tenant.to_string(),
        name: name.to_string(),
        data: data.to_string().into_bytes(),
        source: "room-gateway".into(),
        ts_unix_ms: chrono::Utc::now().timestamp_millis(),
    };
    let subject = subjects::domain(&claims.tenant, &name);
    let js = bus.jetstream.clone();
    tokio::spawn(async move {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(ev.encode_to_vec().into())
            .message_id(&ev.id);
        let sent = async { js.send_publish(subject, publish).await?.await }.await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "audit event not stored");
        }
    });
}

pub fn opened(bus: &Bus, claims: &Claims, conn: &str, meta: &ConnMeta) {
    publish(
        bus,
        claims,
        "connection.opened",
        serde_json::json!({
            "conn_id": conn, "sub": claims.sub, "ip": meta.ip,
            "user_agent": meta.user_agent, "opened_at_ms": meta.opened_at_ms,
        }),
    );
}

pub fn closed(bus: &Bus, claims: &Claims, conn: &str, meta: &ConnMeta, code: u16) {
    let now = chrono::Utc::now().timestamp_millis();
    publish(
        bus,
        claims,
        "connection.closed",
        serde_json::json!({
            "conn_id": conn, "sub": claims.sub, "ip": meta.ip,
            "user_agent": meta.user_agent, "opened_at_ms": meta.opened_at_ms,
            "closed_at_ms": now, "duration_ms": now - meta.opened_at_ms, "close_code": code,
        }),
    );
}
