//! `Bus`: the gateway's one way to NATS. Every subscription, JetStream read,
//! publish and KV operation of the gateway goes through here, and every
//! subject and key comes from `switchboard_proto::subjects`.
//!
//! Two connections: `live` carries the rooms' core subscriptions (a burst of
//! room events never queues behind KV or JetStream requests, and the other
//! way round); the shared one carries everything else. `live` reports every
//! moment it may have lost messages — a dropped message (slow consumer) or a
//! reconnect — through [`LiveLoss`], so rooms can check for a lost tail that
//! no later `prev` would reveal.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{HeaderMap, Subscriber};
use prost::Message as _;
use switchboard_platform::nats::{
    self as platform_nats, PublishEventError, Read, ReadError, StreamSettings, read_ordered,
    send_stored, trace_headers,
};
use switchboard_proto::room_state::RoomState;
use switchboard_proto::{EventName, RoomName, TenantId, pb, subjects};
use tokio::sync::watch;

/// Why a read from NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("NATS request failed")]
    Nats(#[source] async_nats::Error),
    #[error("NATS did not answer in time")]
    TimedOut,
}

impl From<ReadError> for BusError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Nats(e) => Self::Nats(e),
            ReadError::TimedOut => Self::TimedOut,
        }
    }
}

impl BusError {
    fn from<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Self::Nats(Box::new(e))
    }
}

/// How long one JetStream read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts the moments the live connection may have lost messages. A watch
/// channel, so a room that is already idle when it happens still wakes up.
#[derive(Clone)]
pub struct LiveLoss(Arc<watch::Sender<u64>>);

impl Default for LiveLoss {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl LiveLoss {
    fn callback(&self) -> Arc<dyn Fn() + Send + Sync> {
        let count = self.0.clone();
        Arc::new(move || count.send_modify(|n| *n += 1))
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// What the room stream keeps: the recovery window of DESIGN.md §2.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Events kept per room.
    pub per_room: usize,
    /// How long events are kept (`None`: forever).
    pub max_age: Option<Duration>,
    /// When the stream was created (Unix ms): before `created + max_age`
    /// nothing can have aged out.
    pub created_ms: i64,
}

/// What the stream itself says it keeps (another service may have set
/// other limits than this gateway's settings); where it cannot be read,
/// the settings with the most cautious creation time (nothing vouched for
/// by age).
async fn retention_of(shared: &platform_nats::Bus, streams: &StreamSettings) -> Retention {
    let fallback = Retention {
        per_room: streams.room_history as usize,
        max_age: (!streams.room_history_age.is_zero()).then_some(streams.room_history_age),
        created_ms: 0,
    };
    let info = match shared.jetstream.get_stream(subjects::ROOMS_STREAM).await {
        Ok(mut s) => s.info().await.ok().map(|i| (*i).clone()),
        Err(_) => None,
    };
    let Some(info) = info else {
        tracing::warn!(
            "cannot read SB_ROOMS' limits; recovery from since 0 is not vouched for by age"
        );
        return fallback;
    };
    Retention {
        per_room: if info.config.max_messages_per_subject > 0 {
            info.config.max_messages_per_subject as usize
        } else {
            usize::MAX
        },
        max_age: (!info.config.max_age.is_zero()).then_some(info.config.max_age),
        created_ms: (info.created.unix_timestamp_nanos() / 1_000_000) as i64,
    }
}

/// A room's two core subscriptions.
pub struct RoomSubscription {
    pub live: Subscriber,
    pub ephemeral: Subscriber,
}

/// A stored event as JetStream returns it.
pub struct Stored {
    pub seq: u64,
    pub event: pb::RoomEvent,
    /// When the stream stored it (Unix ms).
    pub stored_ms: i64,
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    shared: platform_nats::Bus,
    live: async_nats::Client,
    loss: LiveLoss,
    retention: Retention,
}

fn unix_ms(t: async_nats::jetstream::message::StreamMessage) -> i64 {
    (t.time.unix_timestamp_nanos() / 1_000_000) as i64
}

impl Bus {
    /// Connects both connections and makes sure every stream and bucket
    /// exists; `live_queue` is how many messages a room subscription may
    /// buffer.
    pub async fn start(
        url: &str,
        streams: &StreamSettings,
        live_queue: usize,
    ) -> Result<Self, platform_nats::NatsSetupError> {
        let shared = platform_nats::Bus::start(url, "room-gateway", streams).await?;
        let loss = LiveLoss::default();
        let live = platform_nats::connect_with_capacity(
            url,
            "room-gateway-live",
            live_queue,
            Some(loss.callback()),
        )
        .await?;
        let retention = retention_of(&shared, streams).await;
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                live,
                loss,
                retention,
            }),
        })
    }

    /// The shared connection, for readiness and the tenant watch.
    pub fn shared(&self) -> &platform_nats::Bus {
        &self.inner.shared
    }

    pub fn tenants(&self) -> kv::Store {
        self.inner.shared.tenants.clone()
    }

    pub fn loss(&self) -> &LiveLoss {
        &self.inner.loss
    }

    pub fn retention(&self) -> Retention {
        self.inner.retention
    }

    pub fn is_connected(&self) -> bool {
        self.inner.shared.is_connected()
            && self.inner.live.connection_state() == async_nats::connection::State::Connected
    }

    /// Drains both connections (what was published goes out), within 5 s:
    /// with NATS gone, draining would wait forever.
    pub async fn drain(&self) {
        for (name, client) in [
            ("shared", &self.inner.shared.client),
            ("live", &self.inner.live),
        ] {
            match tokio::time::timeout(Duration::from_secs(5), client.drain()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(connection = name, error = %e, "draining NATS failed"),
                Err(_) => tracing::warn!(connection = name, "draining NATS timed out"),
            }
        }
    }

    // --- Rooms: live subscriptions and stored events ----------------------

    /// Subscribes the room's live and ephemeral subjects; once this returns
    /// the server has both (the flush's ping was answered).
    pub async fn subscribe_room(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<RoomSubscription, BusError> {
        let c = &self.inner.live;
        let live = c
            .subscribe(subjects::room_live(tenant, room))
            .await
            .map_err(BusError::from)?;
        let ephemeral = c
            .subscribe(subjects::room_ephemeral(tenant, room))
            .await
            .map_err(BusError::from)?;
        self.flush_live().await?;
        Ok(RoomSubscription { live, ephemeral })
    }

    /// Waits until the server has seen everything sent on the live
    /// connection (its subscriptions after a reconnect included).
    pub async fn flush_live(&self) -> Result<(), BusError> {
        tokio::time::timeout(READ_TIMEOUT, self.inner.live.flush())
            .await
            .map_err(|_| BusError::TimedOut)?
            .map_err(BusError::from)
    }

    async fn rooms_stream(&self) -> Result<stream::Stream<()>, BusError> {
        self.inner
            .shared
            .jetstream
            .get_stream_no_info(subjects::ROOMS_STREAM)
            .await
            .map_err(BusError::from)
    }

    /// The room's latest stored seq (0 when it has none). A direct get: the
    /// stream answers it itself, not queued behind the JetStream API.
    pub async fn last_seq(&self, tenant: &TenantId, room: &RoomName) -> Result<u64, BusError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = self.rooms_stream().await?;
        let got = tokio::time::timeout(
            READ_TIMEOUT,
            stream.direct_get_last_for_subject(subjects::room_event(tenant, room)),
        )
        .await
        .map_err(|_| BusError::TimedOut)?;
        match got {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
            Err(e) => Err(BusError::from(e)),
        }
    }

    /// The room's oldest stored seq (`None` when it has none).
    pub async fn first_seq(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<Option<u64>, BusError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = self.rooms_stream().await?;
        let got = tokio::time::timeout(
            READ_TIMEOUT,
            stream.direct_get_first_for_subject(subjects::room_event(tenant, room)),
        )
        .await
        .map_err(|_| BusError::TimedOut)?;
        match got {
            Ok(m) => Ok(Some(m.sequence)),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(BusError::from(e)),
        }
    }

    /// When the stream stored `seq`, if it still holds it and it is an event
    /// of this room.
    pub async fn stored_at(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        seq: u64,
    ) -> Result<Option<i64>, BusError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = self.rooms_stream().await?;
        let got = tokio::time::timeout(READ_TIMEOUT, stream.direct_get(seq))
            .await
            .map_err(|_| BusError::TimedOut)?;
        match got {
            Ok(m) if m.subject.as_str() == subjects::room_event(tenant, room) => {
                Ok(Some(unix_ms(m)))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(BusError::from(e)),
        }
    }

    /// The stored room event at `seq` (any room), if the stream holds it.
    pub async fn room_event_at(&self, seq: u64) -> Result<Option<pb::RoomEvent>, BusError> {
        use async_nats::jetstream::stream::DirectGetErrorKind;
        let stream = self.rooms_stream().await?;
        match tokio::time::timeout(READ_TIMEOUT, stream.direct_get(seq))
            .await
            .map_err(|_| BusError::TimedOut)?
        {
            Ok(m) => Ok(pb::RoomEvent::decode(m.payload).ok()),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(BusError::from(e)),
        }
    }

    /// Stored events of the room with `from <= seq <= until`, oldest first.
    pub async fn fetch_range(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        from: u64,
        until: u64,
    ) -> Result<Vec<Stored>, BusError> {
        if until < from {
            return Ok(Vec::new());
        }
        let stream = self.rooms_stream().await?;
        let config = consumer::pull::OrderedConfig {
            filter_subject: subjects::room_event(tenant, room),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        };
        let mut out = Vec::new();
        read_ordered(&stream, config, READ_TIMEOUT, |seq, msg| {
            if seq > until {
                return Read::Done;
            }
            if let Ok(event) = pb::RoomEvent::decode(msg.payload.clone()) {
                let stored_ms = msg
                    .info()
                    .map(|i| (i.published.unix_timestamp_nanos() / 1_000_000) as i64)
                    .unwrap_or_default();
                out.push(Stored {
                    seq,
                    event,
                    stored_ms,
                });
            }
            if seq >= until { Read::Done } else { Read::More }
        })
        .await?;
        Ok(out)
    }

    /// The room's latest state (KV `SB_ROOM_STATE`), if it has one.
    pub async fn room_state(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<Option<RoomState>, BusError> {
        let key = subjects::room_state_key(tenant, room);
        let got = tokio::time::timeout(READ_TIMEOUT, self.inner.shared.room_state.get(key))
            .await
            .map_err(|_| BusError::TimedOut)?
            .map_err(BusError::from)?;
        Ok(got.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    // --- Publishing --------------------------------------------------------

    /// Stores a client's room event and waits for JetStream's ack (the event
    /// id is the `Nats-Msg-Id`: a retry is stored once).
    pub async fn publish_room_event(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        event: &pb::RoomEvent,
    ) -> Result<jetstream::publish::PublishAck, PublishEventError> {
        platform_nats::publish_room_event(&self.inner.shared.jetstream, tenant, room, event).await
    }

    /// Stores a client command on `sb.in.{tenant}.{event}` and waits for the
    /// ack.
    pub async fn send_command(
        &self,
        tenant: &TenantId,
        event: &EventName,
        command: &pb::ClientCommand,
    ) -> Result<jetstream::publish::PublishAck, PublishEventError> {
        let ack = send_stored(
            &self.inner.shared.jetstream,
            subjects::inbox(tenant, event),
            command,
            &command.id,
        )
        .await?;
        Ok(ack.await?)
    }

    /// The stored command at `seq` of `SB_INBOX`, if the stream holds it.
    pub async fn command_at(&self, seq: u64) -> Result<Option<pb::ClientCommand>, BusError> {
        let stream = self
            .inner
            .shared
            .jetstream
            .get_stream_no_info(subjects::INBOX_STREAM)
            .await
            .map_err(BusError::from)?;
        match tokio::time::timeout(READ_TIMEOUT, stream.get_raw_message(seq))
            .await
            .map_err(|_| BusError::TimedOut)?
        {
            Ok(m) => Ok(pb::ClientCommand::decode(m.payload).ok()),
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                Ok(None)
            }
            Err(e) => Err(BusError::from(e)),
        }
    }

    /// An unstored event to every gateway with members in the room.
    pub async fn publish_ephemeral(
        &self,
        tenant: &TenantId,
        room: &RoomName,
        event: &pb::RoomEvent,
    ) -> Result<(), BusError> {
        self.inner
            .shared
            .client
            .publish_with_headers(
                subjects::room_ephemeral(tenant, room),
                trace_headers(),
                event.encode_to_vec().into(),
            )
            .await
            .map_err(BusError::from)
    }

    /// Stores a domain event in `SB_DOMAIN` and waits for the ack.
    pub async fn store_domain_event(
        &self,
        tenant: &TenantId,
        name: &EventName,
        event: &pb::DomainEvent,
    ) -> Result<(), PublishEventError> {
        platform_nats::publish_domain_event(&self.inner.shared.jetstream, tenant, name, event)
            .await
            .map(drop)
    }

    // --- Presence (KV SB_PRESENCE) ------------------------------------------

    /// How many times the shared connection has connected: a presence copy
    /// made before the last reconnect may have missed messages.
    pub fn connects(&self) -> u64 {
        self.inner
            .shared
            .client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn presence_put(&self, key: &str, value: Vec<u8>) -> Result<(), BusError> {
        tokio::time::timeout(
            READ_TIMEOUT,
            self.inner.shared.presence.put(key, value.into()),
        )
        .await
        .map_err(|_| BusError::TimedOut)?
        .map(drop)
        .map_err(BusError::from)
    }

    pub async fn presence_delete(&self, key: &str) -> Result<(), BusError> {
        tokio::time::timeout(READ_TIMEOUT, self.inner.shared.presence.delete(key))
            .await
            .map_err(|_| BusError::TimedOut)?
            .map_err(BusError::from)
    }

    /// Every put and delete of the room's presence keys, from now on. On the
    /// shared connection, like [`Bus::presence_entries`]: the server then
    /// registers this subscription before a read that follows it.
    pub async fn presence_changes(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<Subscriber, BusError> {
        self.inner
            .shared
            .client
            .subscribe(subjects::presence_room_subjects(tenant, room))
            .await
            .map_err(BusError::from)
    }

    /// The last value of each of the room's presence keys (deleted keys
    /// leave an empty value), read with one ordered consumer.
    pub async fn presence_entries(
        &self,
        tenant: &TenantId,
        room: &RoomName,
    ) -> Result<Vec<bytes::Bytes>, BusError> {
        let config = consumer::pull::OrderedConfig {
            filter_subject: subjects::presence_room_subjects(tenant, room),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        };
        let mut out = Vec::new();
        read_ordered(
            &self.inner.shared.presence.stream,
            config,
            READ_TIMEOUT,
            |_, msg| {
                out.push(msg.payload.clone());
                Read::More
            },
        )
        .await?;
        Ok(out)
    }
}

/// Whether a presence message is a delete or purge (an empty message marked
/// in its headers).
pub fn is_removal(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| {
        h.get("KV-Operation")
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
    })
}

/// A live message's `u64` header (`Nats-Sequence`, `Nats-Last-Sequence`).
pub fn header_u64(msg: &async_nats::Message, name: &str) -> Option<u64> {
    msg.headers.as_ref()?.get(name)?.as_str().parse().ok()
}
