//! `connection.opened` / `connection.closed` domain events, for the
//! connection audit in analytics. A session hands them to one worker on the
//! gateway's own runtime (never awaiting NATS itself), which stores them in
//! `SB_DOMAIN`; at shutdown the gateway waits for the worker to store every
//! one handed over before it exits — the sessions' runtimes stop during the
//! drain, and what they spawned would die with them.

use std::time::Duration;

use switchboard_proto::token::Claims;
use switchboard_proto::{EventName, TenantId, pb};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::bus::Bus;

/// Audit events waiting for the worker at most; beyond this (NATS far
/// behind) they are dropped and logged.
const QUEUE: usize = 65_536;
/// Stores in flight at once.
const IN_FLIGHT: usize = 64;

/// Where a connection came from, captured at the upgrade.
#[derive(Debug, Clone)]
pub struct ConnMeta {
    pub ip: String,
    pub user_agent: String,
    pub opened_at_ms: i64,
}

enum Job {
    Store(TenantId, EventName, pb::DomainEvent),
    /// Answered once every job before it is stored (or failed).
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Job>,
}

impl Audit {
    /// Starts the worker on the current runtime.
    pub fn start(bus: Bus) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(work(bus, rx));
        Self { tx }
    }

    fn publish(&self, tenant: &TenantId, name: &'static str, data: serde_json::Value) {
        let name = EventName::parse(name).expect("audit event names follow the rule");
        let ev = pb::DomainEvent {
            id: format!("dom_{}", uuid::Uuid::now_v7().simple()),
            tenant: tenant.to_string(),
            name: name.to_string(),
            data: data.to_string().into_bytes(),
            source: "room-gateway".into(),
            ts_unix_ms: chrono::Utc::now().timestamp_millis(),
        };
        if self
            .tx
            .try_send(Job::Store(tenant.clone(), name, ev))
            .is_err()
        {
            tracing::warn!(%tenant, "audit queue full or closed: an audit event was dropped");
        }
    }

    /// `connection.opened` now, and a guard that records
    /// `connection.closed` when dropped — with the code set by
    /// [`Opened::closing`], else 1012: a session whose runtime stops during
    /// the drain is dropped where it stands, and is still audited.
    pub fn opened(&self, claims: &Claims, conn: &str, meta: ConnMeta) -> Opened {
        self.publish(
            &claims.tenant,
            "connection.opened",
            serde_json::json!({
                "conn_id": conn, "sub": claims.sub, "ip": meta.ip,
                "user_agent": meta.user_agent, "opened_at_ms": meta.opened_at_ms,
            }),
        );
        Opened {
            audit: self.clone(),
            tenant: claims.tenant.clone(),
            sub: claims.sub.clone(),
            conn: conn.to_owned(),
            meta,
            code: None,
        }
    }

    fn closed(&self, tenant: &TenantId, sub: &str, conn: &str, meta: &ConnMeta, code: u16) {
        let now = chrono::Utc::now().timestamp_millis();
        self.publish(
            tenant,
            "connection.closed",
            serde_json::json!({
                "conn_id": conn, "sub": sub, "ip": meta.ip,
                "user_agent": meta.user_agent, "opened_at_ms": meta.opened_at_ms,
                "closed_at_ms": now, "duration_ms": now - meta.opened_at_ms, "close_code": code,
            }),
        );
    }

    /// Waits (at most `within`) until every audit event handed over so far
    /// is stored.
    pub async fn flush(&self, within: Duration) {
        let (done, wait) = oneshot::channel();
        let flushed = async {
            if self.tx.send(Job::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        if tokio::time::timeout(within, flushed).await.is_err() {
            tracing::warn!("audit events still unstored at exit");
        }
    }
}

/// An open connection's audit: `connection.closed` goes out when dropped.
pub struct Opened {
    audit: Audit,
    tenant: TenantId,
    sub: String,
    conn: String,
    meta: ConnMeta,
    code: Option<u16>,
}

impl Opened {
    /// The code the connection closes with.
    pub fn closing(&mut self, code: u16) {
        self.code = Some(code);
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        let code = self
            .code
            .unwrap_or(crate::protocol::CloseCode::Restart.code());
        self.audit
            .closed(&self.tenant, &self.sub, &self.conn, &self.meta, code);
    }
}

async fn work(bus: Bus, mut rx: mpsc::Receiver<Job>) {
    let mut in_flight = JoinSet::new();
    while let Some(job) = rx.recv().await {
        match job {
            Job::Store(tenant, name, ev) => {
                while in_flight.len() >= IN_FLIGHT {
                    in_flight.join_next().await;
                }
                let bus = bus.clone();
                in_flight.spawn(async move {
                    if let Err(e) = bus.store_domain_event(&tenant, &name, &ev).await {
                        tracing::warn!(error = %e, "audit event not stored");
                    }
                });
            }
            Job::Flush(done) => {
                while in_flight.join_next().await.is_some() {}
                let _ = done.send(());
            }
        }
    }
}
