//! room-gateway's settings, from `SB_*` variables (README lists them all).

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_platform::config::{self, ConfigError, ProcessEnv, Source};
use switchboard_platform::nats::StreamSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub streams: StreamSettings,
    /// Interval of server pings; two silent intervals close (`SB_HEARTBEAT`).
    pub heartbeat: Duration,
    /// Largest client frame (`SB_MAX_FRAME_BYTES`); larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Frames a connection may have waiting (`SB_OUTBOUND_QUEUE`); a full
    /// queue closes it with 4008.
    pub outbound_queue: usize,
    /// Time to drain connections on SIGTERM (`SB_DRAIN_SECS`).
    pub drain: Duration,
    /// Recent events kept per room for replays (`SB_GATEWAY_ROOM_CACHE`).
    pub room_cache: usize,
    /// JetStream fetches (replays, gap healing) at once (`SB_REPLAY_CONCURRENCY`).
    pub replay_concurrency: usize,
    /// How often presence entries are refreshed (`SB_PRESENCE_REFRESH`); an
    /// entry not refreshed for three intervals counts as gone.
    pub presence_refresh: Duration,
    /// Live events a room subscription may buffer before the NATS client
    /// drops them (`SB_LIVE_QUEUE`); drops are healed from JetStream.
    pub live_queue: usize,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: config::listen(src, "127.0.0.1:8080")?,
            nats_url: config::string(src, "SB_NATS_URL", "nats://127.0.0.1:4222"),
            streams: StreamSettings::from_source(src)?,
            heartbeat: config::duration(src, "SB_HEARTBEAT", Duration::from_secs(25))?,
            max_frame_bytes: config::parsed(
                src,
                "SB_MAX_FRAME_BYTES",
                64 * 1024,
                "a whole number of bytes",
            )?,
            outbound_queue: config::parsed(
                src,
                "SB_OUTBOUND_QUEUE",
                1024,
                "a whole number of frames",
            )?,
            drain: Duration::from_secs(config::parsed(
                src,
                "SB_DRAIN_SECS",
                10,
                "a whole number of seconds",
            )?),
            room_cache: config::parsed(
                src,
                "SB_GATEWAY_ROOM_CACHE",
                256,
                "a whole number of events",
            )?,
            replay_concurrency: config::parsed(
                src,
                "SB_REPLAY_CONCURRENCY",
                8,
                "a whole number of fetches, at least 1",
            )?,
            live_queue: config::parsed(
                src,
                "SB_LIVE_QUEUE",
                switchboard_platform::nats::DEFAULT_SUBSCRIPTION_CAPACITY,
                "a whole number of messages, at least 1",
            )?,
            presence_refresh: config::duration(
                src,
                "SB_PRESENCE_REFRESH",
                Duration::from_secs(10),
            )?,
        })
    }
}
