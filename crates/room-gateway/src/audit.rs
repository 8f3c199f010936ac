//! `connection.opened` / `connection.closed` domain events, for the
//! connection audit in analytics. Sent in the background: an audit record
//! never delays a socket.

use switchboard_platform::nats::{Bus, PublishEventError, send_domain_event};
use switchboard_proto::token::Claims;
use switchboard_proto::{EventName, pb};

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
    let js = bus.jetstream.clone();
    let tenant = claims.tenant.clone();
    tokio::spawn(async move {
        let sent = async {
            send_domain_event(&js, &tenant, &name, &ev)
                .await?
                .await
                .map_err(Into::into)
        }
        .await;
        if let Err::<_, PublishEventError>(e) = sent {
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
