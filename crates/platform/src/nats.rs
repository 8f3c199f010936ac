//! The NATS side every service shares: connecting, and creating (idempotently)
//! the streams and buckets of DESIGN.md §2, whose limits are configuration.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use switchboard_proto::subjects;

use crate::config::{self, ConfigError, Source};

/// Limits of the streams and buckets; defaults are those of DESIGN.md §2.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Events kept per room (`SB_ROOM_HISTORY`).
    pub room_history: i64,
    /// How long room events are kept (`SB_ROOM_HISTORY_AGE`).
    pub room_history_age: Duration,
    /// Window in which a repeated `Nats-Msg-Id` is stored once (`SB_DEDUP_WINDOW`).
    pub dedup_window: Duration,
    /// How long domain events are kept for consumers (`SB_DOMAIN_AGE`).
    pub domain_age: Duration,
    /// How long a presence entry lives without a refresh (`SB_PRESENCE_TTL`).
    pub presence_ttl: Duration,
}

impl StreamSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let room_history = config::parsed(
            src,
            "SB_ROOM_HISTORY",
            1000,
            "a whole number of events per room, at least 1",
        )?;
        if room_history < 1 {
            return Err(ConfigError {
                var: "SB_ROOM_HISTORY".into(),
                value: room_history.to_string(),
                rule: "a whole number of events per room, at least 1".into(),
            });
        }
        let room_history_age =
            config::duration(src, "SB_ROOM_HISTORY_AGE", Duration::from_secs(86_400))?;
        let dedup_window = config::duration(src, "SB_DEDUP_WINDOW", Duration::from_secs(120))?;
        if !room_history_age.is_zero() && dedup_window > room_history_age {
            // JetStream refuses such a stream; say why before it does.
            return Err(ConfigError {
                var: "SB_DEDUP_WINDOW".into(),
                value: src.get("SB_DEDUP_WINDOW").unwrap_or_else(|| "2m".into()),
                rule:
                    "no longer than SB_ROOM_HISTORY_AGE (events are deduplicated only while kept)"
                        .into(),
            });
        }
        Ok(Self {
            room_history,
            room_history_age,
            dedup_window,
            domain_age: config::duration(src, "SB_DOMAIN_AGE", Duration::from_secs(7 * 86_400))?,
            presence_ttl: config::duration(src, "SB_PRESENCE_TTL", Duration::from_secs(30))?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NatsSetupError {
    #[error(
        "the NATS server at {url} is nats-server {found}; Switchboard needs {floor} or newer (scripts/up and scripts/test start a pinned one)"
    )]
    TooOld {
        url: String,
        found: String,
        floor: String,
    },
    #[error("NATS at {url} did not answer within 15 s (is it running? see SB_NATS_URL)")]
    Unreachable {
        url: String,
        #[source]
        source: Option<async_nats::client::FlushError>,
    },
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot create or update stream {name}")]
    Stream {
        name: &'static str,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot open key-value bucket {name}")]
    Bucket {
        name: &'static str,
        #[source]
        source: jetstream::context::KeyValueError,
    },
}

/// A connected client with the JetStream context and the shared buckets.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub tenants: kv::Store,
    pub presence: kv::Store,
    pub room_state: kv::Store,
}

/// Connects with unlimited reconnects, so a NATS restart is ridden out.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, NatsSetupError> {
    connect_with_capacity(url, name, DEFAULT_SUBSCRIPTION_CAPACITY, None).await
}

/// Messages a subscription may have waiting before the client drops new
/// ones (async-nats' default).
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

/// [`connect`] with the number of messages each subscription may buffer;
/// beyond it the client drops messages (a "slow consumer").
///
/// `on_loss` is told each time messages may have been lost: a subscription
/// dropped one, or the connection came back after an outage (core NATS
/// keeps nothing for a disconnected client), so the owner can recover.
pub async fn connect_with_capacity(
    url: &str,
    name: &str,
    capacity: usize,
    on_loss: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
) -> Result<async_nats::Client, NatsSetupError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .subscription_capacity(capacity.max(1));
    if let Some(on_loss) = on_loss {
        options = options.event_callback(move |event| {
            if matches!(
                event,
                async_nats::Event::SlowConsumer(_) | async_nats::Event::Connected
            ) {
                on_loss();
            }
            async {}
        });
    }
    let client = options
        .connect(url)
        .await
        .map_err(|source| NatsSetupError::Connect {
            url: url.into(),
            source,
        })?;
    // The client connects in the background (it retries until NATS is
    // up); a flush returns once the server answered, its INFO read.
    match tokio::time::timeout(FIRST_ANSWER, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(source)) => {
            return Err(NatsSetupError::Unreachable {
                url: url.into(),
                source: Some(source),
            });
        }
        Err(_) => {
            return Err(NatsSetupError::Unreachable {
                url: url.into(),
                source: None,
            });
        }
    }
    check_version(url, &client.server_info().version)?;
    Ok(client)
}

/// How long a service waits at start-up for NATS to answer before it exits.
const FIRST_ANSWER: Duration = Duration::from_secs(15);

/// The oldest nats-server Switchboard runs on (DESIGN.md §1).
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 14, 0);

/// Refuses a server older than [`MIN_SERVER_VERSION`], naming both.
pub fn check_version(url: &str, found: &str) -> Result<(), NatsSetupError> {
    let parsed = parse_version(found);
    if parsed.is_some_and(|v| v >= MIN_SERVER_VERSION) {
        return Ok(());
    }
    let (a, b, c) = MIN_SERVER_VERSION;
    Err(NatsSetupError::TooOld {
        url: url.into(),
        found: found.into(),
        floor: format!("{a}.{b}.{c}"),
    })
}

/// `2.15.1` (or `v2.15.1-beta.2`) as numbers; `None` when it is no version.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().unwrap_or(Some(0))?,
    ))
}

impl Bus {
    /// Connects and makes sure every stream and bucket exists with
    /// `settings`; after every reconnect it makes sure again (a restarted
    /// server has lost its memory-stored buckets, such as `SB_PRESENCE`).
    pub async fn start(
        url: &str,
        name: &str,
        settings: &StreamSettings,
    ) -> Result<Self, NatsSetupError> {
        let (reconnected_tx, mut reconnected) = tokio::sync::watch::channel(0u64);
        let on_loss: std::sync::Arc<dyn Fn() + Send + Sync> =
            std::sync::Arc::new(move || reconnected_tx.send_modify(|n| *n += 1));
        let client =
            connect_with_capacity(url, name, DEFAULT_SUBSCRIPTION_CAPACITY, Some(on_loss)).await?;
        let jetstream = jetstream::new(client.clone());
        let [tenants, presence, room_state] = ensure_all(&jetstream, settings).await?;
        reconnected.mark_unchanged();
        let keeper = {
            let (client, jetstream, settings) =
                (client.clone(), jetstream.clone(), settings.clone());
            async move {
                use std::sync::atomic::Ordering::Relaxed;
                let mut seen = client.statistics().connects.load(Relaxed);
                while reconnected.changed().await.is_ok() {
                    let now = client.statistics().connects.load(Relaxed);
                    if now == seen {
                        continue; // a dropped message, not a reconnect
                    }
                    seen = now;
                    match ensure_all(&jetstream, &settings).await {
                        Ok(_) => {
                            tracing::info!("streams and buckets checked after a NATS reconnect")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "streams and buckets not restored after a NATS reconnect")
                        }
                    }
                }
            }
        };
        tokio::spawn(keeper);
        Ok(Self {
            client,
            jetstream,
            tenants,
            presence,
            room_state,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// The stream configurations, exactly as DESIGN.md §2 has them.
pub fn stream_configs(settings: &StreamSettings) -> Vec<stream::Config> {
    vec![
        stream::Config {
            name: subjects::ROOMS_STREAM.into(),
            subjects: vec![subjects::ROOM_EVENTS_ALL.into()],
            max_messages_per_subject: settings.room_history,
            max_age: settings.room_history_age,
            duplicate_window: settings.dedup_window,
            storage: stream::StorageType::File,
            allow_direct: true,
            // The batch endpoint stores a request's events all or none.
            allow_atomic_publish: true,
            republish: Some(stream::Republish {
                source: subjects::ROOM_EVENTS_ALL.into(),
                destination: subjects::ROOM_LIVE_ALL.into(),
                headers_only: false,
            }),
            ..Default::default()
        },
        stream::Config {
            name: subjects::DOMAIN_STREAM.into(),
            subjects: vec![subjects::DOMAIN_ALL.into()],
            max_age: settings.domain_age,
            duplicate_window: settings.dedup_window,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: subjects::INBOX_STREAM.into(),
            subjects: vec![subjects::INBOX_ALL.into()],
            max_age: settings.domain_age,
            duplicate_window: settings.dedup_window,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: subjects::DEAD_STREAM.into(),
            subjects: vec![subjects::DEAD_ALL.into()],
            max_age: settings.domain_age,
            storage: stream::StorageType::File,
            ..Default::default()
        },
        stream::Config {
            name: subjects::TASKS_STREAM.into(),
            subjects: vec![subjects::TASKS_ALL.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: settings.dedup_window,
            storage: stream::StorageType::File,
            ..Default::default()
        },
    ]
}

/// Every stream, then the buckets `[tenants, presence, room_state]`.
async fn ensure_all(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<[kv::Store; 3], NatsSetupError> {
    ensure_streams(js, settings).await?;
    let tenants = ensure_bucket(
        js,
        subjects::TENANTS_BUCKET,
        kv::Config {
            history: 1,
            ..Default::default()
        },
    )
    .await?;
    let presence = ensure_bucket(
        js,
        subjects::PRESENCE_BUCKET,
        kv::Config {
            history: 1,
            max_age: settings.presence_ttl,
            storage: stream::StorageType::Memory,
            ..Default::default()
        },
    )
    .await?;
    let room_state = ensure_bucket(
        js,
        subjects::ROOM_STATE_BUCKET,
        kv::Config {
            history: 1,
            ..Default::default()
        },
    )
    .await?;
    Ok([tenants, presence, room_state])
}

async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), NatsSetupError> {
    for config in stream_configs(settings) {
        let name = static_name(&config.name);
        // Several services start at once: creation races are settled by the
        // server, and "already exists" with a different config is an update.
        js.create_or_update_stream(config)
            .await
            .map_err(|source| NatsSetupError::Stream { name, source })?;
    }
    Ok(())
}

/// Creates a key-value bucket as the stream KV clients expect (`KV_{name}`
/// on `$KV.{name}.>`), then opens it. The stream config is written here,
/// with the limits this module owns, so every service creates it alike.
async fn ensure_bucket(
    js: &jetstream::Context,
    name: &'static str,
    config: kv::Config,
) -> Result<kv::Store, NatsSetupError> {
    let stream = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        storage: config.storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_or_update_stream(stream)
        .await
        .map_err(|source| NatsSetupError::Stream { name, source })?;
    js.get_key_value(name)
        .await
        .map_err(|source| NatsSetupError::Bucket { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_older_than_the_floor_are_refused_with_both_versions() {
        assert!(check_version("u", "2.14.0").is_ok());
        assert!(check_version("u", "2.15.1").is_ok());
        assert!(check_version("u", "3.0.0").is_ok());
        let e = check_version("nats://x", "2.9.10").unwrap_err().to_string();
        assert!(e.contains("2.9.10") && e.contains("2.14.0"), "{e}");
        assert!(check_version("u", "2.12.8").is_err());
        assert!(check_version("u", "garbage").is_err());
        assert_eq!(parse_version("v2.14.0-beta.1"), Some((2, 14, 0)));
    }
}

fn static_name(name: &str) -> &'static str {
    [
        subjects::TENANTS_BUCKET,
        subjects::PRESENCE_BUCKET,
        subjects::ROOM_STATE_BUCKET,
        subjects::ROOMS_STREAM,
        subjects::DOMAIN_STREAM,
        subjects::INBOX_STREAM,
        subjects::TASKS_STREAM,
        subjects::DEAD_STREAM,
    ]
    .into_iter()
    .find(|n| *n == name)
    .unwrap_or("stream")
}

/// Headers every published message carries: the W3C trace context of the
/// current span, so a trace follows an event from HTTP to each socket.
pub fn trace_headers() -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    crate::telemetry::inject_current(|k, v| headers.insert(k, v));
    headers
}

#[derive(Debug, thiserror::Error)]
pub enum PublishEventError {
    #[error("JetStream did not take the event")]
    Publish(#[from] jetstream::context::PublishError),
}

/// Stores a room event in `SB_ROOMS` and waits for JetStream's ack. The event
/// id is the `Nats-Msg-Id`, so a retried publish is stored once and answers
/// with the first one's sequence.
pub async fn publish_room_event(
    js: &jetstream::Context,
    tenant: &switchboard_proto::TenantId,
    room: &switchboard_proto::RoomName,
    event: &switchboard_proto::pb::RoomEvent,
) -> Result<jetstream::publish::PublishAck, PublishEventError> {
    let ack = send_room_event(js, tenant, room, event).await?;
    Ok(ack.await?)
}

/// Sends a room event without waiting for its ack, for pipelined batches:
/// await the returned futures in order.
pub async fn send_room_event(
    js: &jetstream::Context,
    tenant: &switchboard_proto::TenantId,
    room: &switchboard_proto::RoomName,
    event: &switchboard_proto::pb::RoomEvent,
) -> Result<jetstream::context::PublishAckFuture, PublishEventError> {
    send_room_event_timed(js, tenant, room, event, None).await
}

/// [`send_room_event`], marking the event with when its HTTP request came
/// in (`subjects::HOP_HEADER`, Unix nanoseconds) when `http_in_ns` is given:
/// gateways then time the rest of its way (`/v1/stats/hops`).
pub async fn send_room_event_timed(
    js: &jetstream::Context,
    tenant: &switchboard_proto::TenantId,
    room: &switchboard_proto::RoomName,
    event: &switchboard_proto::pb::RoomEvent,
    http_in_ns: Option<u64>,
) -> Result<jetstream::context::PublishAckFuture, PublishEventError> {
    let mut headers = trace_headers();
    if let Some(ns) = http_in_ns {
        headers.insert(subjects::HOP_HEADER, ns.to_string().as_str());
    }
    send_stored_with(
        js,
        subjects::room_event(tenant, room),
        event,
        &event.id,
        headers,
    )
    .await
}

/// Sends `message` to a stream's `subject` with `id` as `Nats-Msg-Id` (so a
/// retry is stored once) and the current trace context, without waiting
/// for the ack.
pub async fn send_stored(
    js: &jetstream::Context,
    subject: String,
    message: &impl prost::Message,
    id: &str,
) -> Result<jetstream::context::PublishAckFuture, PublishEventError> {
    send_stored_with(js, subject, message, id, trace_headers()).await
}

/// [`send_stored`] with the headers given (the trace context among them).
pub async fn send_stored_with(
    js: &jetstream::Context,
    subject: String,
    message: &impl prost::Message,
    id: &str,
    headers: async_nats::HeaderMap,
) -> Result<jetstream::context::PublishAckFuture, PublishEventError> {
    let publish = jetstream::message::PublishMessage::build()
        .payload(message.encode_to_vec().into())
        .headers(headers)
        .message_id(id);
    Ok(js.send_publish(subject, publish).await?)
}

/// Stores a domain event in `SB_DOMAIN` on `sb.dom.{tenant}.{name}` and waits
/// for JetStream's ack. The event id is the `Nats-Msg-Id`, so a retried
/// publish is stored once.
pub async fn publish_domain_event(
    js: &jetstream::Context,
    tenant: &switchboard_proto::TenantId,
    name: &switchboard_proto::EventName,
    event: &switchboard_proto::pb::DomainEvent,
) -> Result<jetstream::publish::PublishAck, PublishEventError> {
    let ack = send_domain_event(js, tenant, name, event).await?;
    Ok(ack.await?)
}

/// Sends a domain event without waiting for its ack (pipelining, as
/// [`send_room_event`]).
pub async fn send_domain_event(
    js: &jetstream::Context,
    tenant: &switchboard_proto::TenantId,
    name: &switchboard_proto::EventName,
    event: &switchboard_proto::pb::DomainEvent,
) -> Result<jetstream::context::PublishAckFuture, PublishEventError> {
    send_stored(js, subjects::domain(tenant, name), event, &event.id).await
}

/// One message of an atomic batch: where it goes, its headers (the trace
/// context and `Nats-Msg-Id` among them) and its bytes.
pub struct Outgoing {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: bytes::Bytes,
}

/// A committed atomic batch: its messages hold the stream sequences
/// `last - count + 1 ..= last`, in the order they were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    pub last: u64,
    pub count: u64,
}

impl BatchAck {
    /// The sequence of the batch's `i`-th message.
    pub fn sequence(&self, i: usize) -> u64 {
        self.last + 1 - self.count + i as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchPublishError {
    #[error("sending a batch message to NATS failed")]
    Send(#[source] async_nats::PublishError),
    #[error("the batch's commit got no answer")]
    Commit(#[source] async_nats::RequestError),
    #[error("JetStream refused the batch: {description} (err_code {err_code})")]
    Refused { err_code: u64, description: String },
    #[error("JetStream's answer to the batch is not an ack")]
    BadAck(#[source] serde_json::Error),
}

/// JetStream error codes of an atomic batch (ADR-50).
pub const BATCH_DUPLICATE_MSG_ID: u64 = 10201;
pub const BATCH_TOO_MANY_IN_FLIGHT: u64 = 10210;

impl BatchPublishError {
    /// A message id of the batch is already stored (in the dedup window):
    /// nothing of this batch was stored.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Refused { err_code, .. } if *err_code == BATCH_DUPLICATE_MSG_ID)
    }

    /// The stream or server holds as many open batches as it allows: retry
    /// shortly.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Refused { err_code, .. } if *err_code == BATCH_TOO_MANY_IN_FLIGHT)
    }
}

/// Stores `messages` (at most the server's batch limit, 1000 by default) in
/// one stream as one atomic batch (JetStream, ADR-50; the stream needs
/// `allow_atomic`): all of them or none, with one ack for the batch. Every
/// message goes out on `client`'s one connection in order, the last as the
/// commit request; nothing waits for a reply before then.
///
/// A batch carrying a `Nats-Msg-Id` that is already stored is refused whole
/// ([`BatchPublishError::is_duplicate`]): a retry must learn the first
/// attempt's answer some other way.
pub async fn publish_atomic_batch(
    client: &async_nats::Client,
    messages: Vec<Outgoing>,
) -> Result<BatchAck, BatchPublishError> {
    use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
    let batch_id = uuid::Uuid::new_v4().simple().to_string();
    let n = messages.len();
    let mut commit = None;
    for (i, mut m) in messages.into_iter().enumerate() {
        m.headers.insert(NATS_BATCH_ID, batch_id.as_str());
        m.headers
            .insert(NATS_BATCH_SEQUENCE, itoa::Buffer::new().format(i + 1));
        if i + 1 == n {
            m.headers.insert(
                NATS_BATCH_COMMIT,
                async_nats::header::NATS_BATCH_COMMIT_FINAL,
            );
            commit = Some(m);
        } else {
            client
                .publish_with_headers(m.subject, m.headers, m.payload)
                .await
                .map_err(BatchPublishError::Send)?;
        }
    }
    let Some(m) = commit else {
        return Ok(BatchAck { last: 0, count: 0 });
    };
    let reply = client
        .request_with_headers(m.subject, m.headers, m.payload)
        .await
        .map_err(BatchPublishError::Commit)?;
    #[derive(serde::Deserialize)]
    struct ApiError {
        err_code: u64,
        #[serde(default)]
        description: String,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        count: Option<u64>,
        #[serde(default)]
        error: Option<ApiError>,
    }
    let answer: Answer =
        serde_json::from_slice(&reply.payload).map_err(BatchPublishError::BadAck)?;
    if let Some(e) = answer.error {
        return Err(BatchPublishError::Refused {
            err_code: e.err_code,
            description: e.description,
        });
    }
    Ok(BatchAck {
        last: answer.seq,
        count: answer.count.unwrap_or(n as u64),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("JetStream read failed")]
    Nats(#[source] async_nats::Error),
    #[error("JetStream did not answer in time")]
    TimedOut,
}

impl ReadError {
    fn nats<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Self::Nats(Box::new(e))
    }
}

/// What [`read_ordered`]'s reader says after a message.
pub enum Read {
    More,
    Done,
}

/// Reads `stream` through one short-lived ordered consumer with `config`,
/// handing each message (with its stream sequence) to `take` until it says
/// [`Read::Done`] or nothing more is pending, within `timeout`; the consumer
/// is deleted afterwards.
pub async fn read_ordered<I>(
    stream: &jetstream::stream::Stream<I>,
    config: jetstream::consumer::pull::OrderedConfig,
    timeout: Duration,
    mut take: impl FnMut(u64, &jetstream::Message) -> Read,
) -> Result<(), ReadError> {
    use futures_util::StreamExt as _;
    let consumer = tokio::time::timeout(timeout, stream.create_consumer(config))
        .await
        .map_err(|_| ReadError::TimedOut)?
        .map_err(ReadError::nats)?;
    let name = consumer.cached_info().name.clone();
    let empty = consumer.cached_info().num_pending == 0;
    let read = async {
        if empty {
            return Ok(());
        }
        let mut messages = consumer.messages().await.map_err(ReadError::nats)?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(ReadError::nats)?;
            let info = msg.info().map_err(ReadError::Nats)?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if matches!(take(seq, &msg), Read::Done) || pending == 0 {
                break;
            }
        }
        Ok::<_, ReadError>(())
    };
    let result = tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ReadError::TimedOut));
    // Ordered consumers linger for their inactivity threshold; delete ours
    // now so the number alive stays the number of reads in flight.
    let _ = stream.delete_consumer(&name).await;
    result
}

/// Where the messages with some `Nats-Msg-Id`s are in a stream.
#[derive(Debug, Default)]
pub struct Found {
    /// Message id → stream sequence, for those found.
    pub seqs: std::collections::HashMap<String, u64>,
    /// Some subject no longer holds every message stored since the time
    /// asked about (its oldest were removed): a missing id may have been
    /// stored and removed.
    pub truncated: bool,
}

/// Looks for messages with the ids `ids` stored on `subjects` of `stream`
/// since `since`: which are there, at which sequence, and whether the
/// answer can be trusted for the missing ones.
pub async fn find_stored(
    js: &jetstream::Context,
    stream: &str,
    subjects: Vec<String>,
    since: std::time::SystemTime,
    ids: &std::collections::HashSet<String>,
) -> Result<Found, ReadError> {
    let mut stream = js.get_stream(stream).await.map_err(ReadError::nats)?;
    let since_ns = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    let config = stream.info().await.map_err(ReadError::nats)?.config.clone();
    // Messages leave a subject only by the stream's limits: by age, or to
    // make room past its per-subject count.
    let aged_out = !config.max_age.is_zero()
        && since
            .elapsed()
            .is_ok_and(|age| age + Duration::from_secs(1) >= config.max_age);
    let mut found = Found::default();
    for subject in &subjects {
        // A subject whose oldest message is newer than `since` (and not one
        // looked for) may have lost older ones, if a limit could remove them.
        let first = match stream.get_first_raw_message_by_subject(subject, 1).await {
            Ok(first) => first,
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                continue;
            }
            Err(e) => return Err(ReadError::nats(e)),
        };
        let ours = first
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .is_some_and(|id| ids.contains(id.as_str()));
        if first.time.unix_timestamp_nanos() <= since_ns || ours {
            continue;
        }
        let full = config.max_messages_per_subject > 0 && {
            use futures_util::TryStreamExt as _;
            let mut counts = stream
                .info_with_subjects(subject.as_str())
                .await
                .map_err(ReadError::nats)?;
            let mut held = 0u64;
            while let Some((_, n)) = counts.try_next().await.map_err(ReadError::nats)? {
                held += n as u64;
            }
            held >= config.max_messages_per_subject as u64
        };
        if full || aged_out {
            found.truncated = true;
        }
    }
    let config = jetstream::consumer::pull::OrderedConfig {
        filter_subjects: subjects,
        headers_only: true,
        deliver_policy: jetstream::consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(since_ns).map_err(ReadError::Nats)?,
        },
        ..Default::default()
    };
    read_ordered(&stream, config, Duration::from_secs(30), |seq, msg| {
        if let Some(id) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            && ids.contains(id.as_str())
        {
            found.seqs.insert(id.as_str().to_owned(), seq);
        }
        if found.seqs.len() == ids.len() {
            Read::Done
        } else {
            Read::More
        }
    })
    .await?;
    Ok(found)
}
