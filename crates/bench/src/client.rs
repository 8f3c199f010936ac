//! One simulated browser: connects from a chosen source address, joins one
//! room, and checks every event it gets against the room's `prev` chain
//! (duplicates, gaps) while timing publish → frame from the `t` the
//! publisher put in the payload. In storm mode it comes back after a close
//! the way PROTOCOL.md asks: after `reconnect.after_ms`, else exponential
//! backoff with full jitter, re-joining with `since`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::hist::Histogram;

/// How long a connect + join may take before it counts as failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Receive buffer of a client that stops reading: small, so the gateway's
/// queue (not the kernel's buffers) takes the overflow.
const SLOW_RCVBUF: u32 = 4096;
/// Full-jitter backoff between failed reconnects.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// Errors kept verbatim in a report; the rest are only counted.
const KEPT_ERRORS: usize = 10;

/// Microseconds since the Unix epoch: the publisher's clock and ours are the
/// same machine's.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What one worker's connections saw, summed; merged across workers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Connections that completed their first join.
    pub opened: u64,
    /// Connections that could not complete their first join.
    pub failed: u64,
    /// Connections joined right now.
    pub joined_now: u64,
    /// Joins completed, first ones and re-joins.
    pub joins: u64,
    /// Connection attempts that failed while coming back.
    pub retry_failures: u64,
    /// Readers (not slow) per room index, counted at their first join.
    pub room_readers: Vec<u64>,
    /// Stored events delivered to readers, per room index (slow ones excluded).
    pub room_received: Vec<u64>,
    pub received: u64,
    pub duplicates: u64,
    /// Events whose `prev` was not the last `seq` held.
    pub gaps: u64,
    /// Re-joins answered `recovered: false`.
    pub unrecovered: u64,
    /// Connections ended by the server, by close code (0: no close frame).
    pub closes: BTreeMap<String, u64>,
    pub slow_conns: u64,
    /// Slow connections that ended with 4008.
    pub slow_closed_4008: u64,
    /// Latest join (Unix ms), to time a storm's end.
    pub last_join_unix_ms: u64,
    pub latency: Histogram,
    pub connect_latency: Histogram,
    pub errors: Vec<String>,
    pub error_count: u64,
}

impl Stats {
    pub fn with_rooms(rooms: usize) -> Self {
        Self {
            room_readers: vec![0; rooms],
            room_received: vec![0; rooms],
            ..Self::default()
        }
    }

    fn error(&mut self, e: String) {
        self.error_count += 1;
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(e);
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        self.opened += o.opened;
        self.failed += o.failed;
        self.joined_now += o.joined_now;
        self.joins += o.joins;
        self.retry_failures += o.retry_failures;
        add_vec(&mut self.room_readers, &o.room_readers);
        add_vec(&mut self.room_received, &o.room_received);
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.gaps += o.gaps;
        self.unrecovered += o.unrecovered;
        for (code, n) in &o.closes {
            *self.closes.entry(code.clone()).or_default() += n;
        }
        self.slow_conns += o.slow_conns;
        self.slow_closed_4008 += o.slow_closed_4008;
        self.last_join_unix_ms = self.last_join_unix_ms.max(o.last_join_unix_ms);
        self.latency.merge(&o.latency);
        self.connect_latency.merge(&o.connect_latency);
        self.error_count += o.error_count;
        for e in &o.errors {
            if self.errors.len() < KEPT_ERRORS {
                self.errors.push(e.clone());
            }
        }
    }
}

fn add_vec(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// What a worker's connections share.
pub struct Shared {
    pub stats: Mutex<Stats>,
    /// Slow connections read nothing until this turns true.
    pub resume: watch::Receiver<bool>,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats
            .lock()
            .expect("stats lock is never poisoned: nothing panics while holding it")
    }
}

/// One connection's plan.
pub struct ConnSpec {
    pub gateway: SocketAddr,
    pub source: Ipv4Addr,
    pub room: Arc<str>,
    pub room_idx: usize,
    pub token: String,
    pub slow: bool,
    pub reconnect: bool,
}

type Ws = WebSocketStream<TcpStream>;

/// The frames the client reads; everything else in them is skipped.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    seq: Option<u64>,
    prev: Option<u64>,
    recovered: Option<bool>,
    after_ms: Option<u64>,
    code: Option<&'a str>,
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    t: Option<u64>,
}

struct End {
    code: u16,
    after_ms: Option<u64>,
}

/// Runs a connection until its process ends (or, without `reconnect`, until
/// it is closed). `first` learns whether the first join succeeded.
pub async fn run(spec: ConnSpec, shared: Arc<Shared>, first: oneshot::Sender<bool>) {
    let mut first = Some(first);
    let mut last: Option<u64> = None;
    let mut attempt: u32 = 0;
    loop {
        let t0 = std::time::Instant::now();
        let joined = tokio::time::timeout(JOIN_TIMEOUT, connect_and_join(&spec, last)).await;
        let (ws, seq, recovered) = match joined {
            Ok(Ok(j)) => j,
            failed => {
                let e = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "connect + join timed out".to_owned(),
                };
                let was_first = {
                    let mut s = shared.lock();
                    s.error(e);
                    if first.is_some() {
                        s.failed += 1;
                    } else {
                        s.retry_failures += 1;
                    }
                    first.is_some()
                };
                if was_first {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(false);
                    }
                    return;
                }
                if !spec.reconnect {
                    return;
                }
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
        };
        attempt = 0;
        {
            let mut s = shared.lock();
            s.joins += 1;
            s.joined_now += 1;
            s.last_join_unix_ms = now_us() / 1000;
            s.connect_latency.record(t0.elapsed().as_micros() as u64);
            match last {
                None => {
                    last = Some(seq);
                    s.opened += 1;
                    if spec.slow {
                        s.slow_conns += 1;
                    } else {
                        s.room_readers[spec.room_idx] += 1;
                    }
                }
                Some(_) if !recovered => s.unrecovered += 1,
                Some(_) => {}
            }
        }
        if let Some(tx) = first.take() {
            let _ = tx.send(true);
        }
        let end = read(ws, &spec, &shared, &mut last).await;
        {
            let mut s = shared.lock();
            s.joined_now -= 1;
            *s.closes.entry(end.code.to_string()).or_default() += 1;
            if spec.slow && end.code == 4008 {
                s.slow_closed_4008 += 1;
            }
        }
        if !spec.reconnect {
            return;
        }
        let wait = end
            .after_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| backoff(1));
        tokio::time::sleep(wait).await;
    }
}

fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    Duration::from_micros(rand::random_range(0..=ceiling.as_micros() as u64))
}

async fn connect_and_join(spec: &ConnSpec, since: Option<u64>) -> anyhow::Result<(Ws, u64, bool)> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(spec.source.into(), 0))
        .with_context(|| format!("binding source address {}", spec.source))?;
    if spec.slow {
        socket.set_recv_buffer_size(SLOW_RCVBUF)?;
    }
    let stream = socket
        .connect(spec.gateway)
        .await
        .with_context(|| format!("connecting to {}", spec.gateway))?;
    stream.set_nodelay(true)?;
    let mut req = format!("ws://{}/v1/ws", spec.gateway).into_client_request()?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", spec.token)
            .parse()
            .context("token is a header value")?,
    );
    // Small buffers: many connections per process, small frames.
    let config = WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .context("WebSocket upgrade")?;
    let join = match since {
        Some(since) => {
            format!(
                r#"{{"op":"join","room":"{}","id":1,"since":{since}}}"#,
                spec.room
            )
        }
        None => format!(r#"{{"op":"join","room":"{}","id":1}}"#, spec.room),
    };
    ws.send(Message::text(join)).await.context("sending join")?;
    loop {
        let msg = ws
            .next()
            .await
            .context("closed before joined")?
            .context("reading joined")?;
        let Message::Text(text) = msg else {
            if let Message::Close(c) = msg {
                bail!("closed before joined: {c:?}");
            }
            continue;
        };
        let f: Frame<'_> = serde_json::from_str(text.as_str()).context("frame is not JSON")?;
        match f.kind {
            "joined" => {
                return Ok((ws, f.seq.unwrap_or(0), f.recovered.unwrap_or(false)));
            }
            "error" => bail!("join refused: {}", f.code.unwrap_or("?")),
            _ => {}
        }
    }
}

async fn read(mut ws: Ws, spec: &ConnSpec, shared: &Shared, last: &mut Option<u64>) -> End {
    if spec.slow {
        let mut resume = shared.resume.clone();
        let _ = resume.wait_for(|go| *go).await;
    }
    let mut after_ms = None;
    loop {
        let msg = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(_)) | None => return End { code: 0, after_ms },
        };
        match msg {
            Message::Text(text) => {
                let Ok(f) = serde_json::from_str::<Frame<'_>>(text.as_str()) else {
                    shared.lock().error("a frame is not JSON".into());
                    continue;
                };
                match f.kind {
                    "event" => {
                        let (Some(seq), Some(prev)) = (f.seq, f.prev) else {
                            continue; // ephemeral
                        };
                        let at = now_us();
                        let held = last.unwrap_or(0);
                        let mut s = shared.lock();
                        if seq <= held {
                            s.duplicates += 1;
                            continue;
                        }
                        if prev != held {
                            s.gaps += 1;
                        }
                        *last = Some(seq);
                        if !spec.slow {
                            s.received += 1;
                            s.room_received[spec.room_idx] += 1;
                            if let Some(t) = f.data.and_then(|d| d.t) {
                                s.latency.record(at.saturating_sub(t));
                            }
                        }
                    }
                    "reconnect" => after_ms = f.after_ms,
                    _ => {}
                }
            }
            Message::Close(c) => {
                return End {
                    code: c.map(|c| u16::from(c.code)).unwrap_or(1005),
                    after_ms,
                };
            }
            _ => {}
        }
    }
}
