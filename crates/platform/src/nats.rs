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
