//! Publishing through ingest, as a tenant backend does: paced (open loop, a
//! rate per second, the send time in the payload for latency) or as fast as
//! answers come (closed loop, for ingest's own throughput).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::now_us;
use crate::setup::Tenant;

/// Attempts of one paced publish with a key (the same `Idempotency-Key`
/// each time, so a retried event is stored once).
const ATTEMPTS: u32 = 4;

#[derive(Clone)]
pub struct Ingest {
    http: reqwest::Client,
    base: Arc<str>,
    tenant: Arc<str>,
    auth: Arc<str>,
    /// Whether paced publishes carry an `Idempotency-Key` (and are retried).
    keyed: bool,
}

#[derive(Deserialize)]
struct Stored {
    seq: u64,
}

#[derive(Deserialize)]
struct BatchStored {
    items: Vec<Stored>,
}

/// What a paced run stored.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Events acknowledged (stored in JetStream), per room index.
    pub acked: Vec<u64>,
    /// Publishes that failed every attempt (their fate is unknown).
    pub failed: u64,
    /// Sends that started late because `concurrency` requests were in flight.
    pub behind: u64,
    pub secs: f64,
}

impl Published {
    pub fn total(&self) -> u64 {
        self.acked.iter().sum()
    }
}

impl Ingest {
    pub fn new(base: &str, tenant: &Tenant) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a plain HTTP client builds");
        Self {
            http,
            base: base.into(),
            tenant: tenant.id.as_str().into(),
            auth: format!("Bearer {}", tenant.api_key).into(),
            keyed: true,
        }
    }

    /// Paced publishes without an `Idempotency-Key`: the plain publish path
    /// (HTTP → JetStream), no PostgreSQL. Without a key a retry could store
    /// an event twice, so a failed publish is not retried (it counts as
    /// failed).
    pub fn unkeyed(&self) -> Self {
        Self {
            keyed: false,
            ..self.clone()
        }
    }

    /// One event to `room`; `Ok(seq)` once JetStream holds it.
    pub async fn event(&self, room: &str, body: String, key: Option<&str>) -> anyhow::Result<u64> {
        let mut req = self
            .http
            .post(format!(
                "{}/v1/tenants/{}/rooms/{room}/events",
                self.base, self.tenant
            ))
            .header("authorization", &*self.auth)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let res = req.send().await.context("POST …/events")?;
        if res.status().as_u16() != 201 {
            bail!("ingest answered {}", res.status());
        }
        Ok(res.json::<Stored>().await?.seq)
    }

    /// A batch (`{"events": [...]}` already encoded); the number stored.
    pub async fn batch(&self, body: String) -> anyhow::Result<usize> {
        let res = self
            .http
            .post(format!("{}/v1/tenants/{}/events", self.base, self.tenant))
            .header("authorization", &*self.auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST …/events (batch)")?;
        if res.status().as_u16() != 201 {
            bail!("ingest answered {}", res.status());
        }
        Ok(res.json::<BatchStored>().await?.items.len())
    }

    /// Publishes `rate` events per second over `rooms` (round robin) until
    /// `duration` passes or `stop` is set, each carrying its send time `t`
    /// (µs) and `pad` bytes of filler.
    pub async fn paced(
        &self,
        rooms: &[String],
        rate: f64,
        duration: Duration,
        pad: usize,
        concurrency: usize,
        stop: Option<Arc<AtomicBool>>,
    ) -> Published {
        static KEYS: AtomicU64 = AtomicU64::new(0);
        let filler: Arc<str> = "x".repeat(pad).into();
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks: JoinSet<(usize, bool)> = JoinSet::new();
        let mut out = Published {
            acked: vec![0; rooms.len()],
            ..Published::default()
        };
        let t0 = Instant::now();
        let mut sent: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let run = format!("{:08x}", rand::random::<u32>());
        while t0.elapsed() < duration && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            tick.tick().await;
            let due = (t0.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                let permit = match gate.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        out.behind += 1;
                        gate.clone()
                            .acquire_owned()
                            .await
                            .expect("the publish gate is never closed")
                    }
                };
                let idx = (sent % rooms.len() as u64) as usize;
                let room = rooms[idx].clone();
                let me = self.clone();
                let filler = filler.clone();
                let key = self
                    .keyed
                    .then(|| format!("bench-{run}-{}", KEYS.fetch_add(1, Ordering::Relaxed)));
                tasks.spawn(async move {
                    let _permit = permit;
                    // The same body on every attempt: a retried key must match.
                    let body = format!(
                        r#"{{"event":"bench.tick","data":{{"t":{},"p":"{filler}"}}}}"#,
                        now_us()
                    );
                    let attempts = if key.is_some() { ATTEMPTS } else { 1 };
                    for attempt in 0..attempts {
                        if me.event(&room, body.clone(), key.as_deref()).await.is_ok() {
                            return (idx, true);
                        }
                        if attempt + 1 < attempts {
                            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                        }
                    }
                    (idx, false)
                });
                sent += 1;
                while let Some(done) = tasks.try_join_next() {
                    tally(&mut out, done);
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            tally(&mut out, done);
        }
        out.secs = t0.elapsed().as_secs_f64();
        out
    }
}

fn tally(out: &mut Published, done: Result<(usize, bool), tokio::task::JoinError>) {
    match done {
        Ok((idx, true)) => out.acked[idx] += 1,
        _ => out.failed += 1,
    }
}
