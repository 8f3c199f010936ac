//! room-gateway's settings, from `SB_*` variables (README lists them all).
//! A value that breaks its rule stops the gateway before it binds, naming
//! the variable and the rule; nothing is raised or lowered silently.

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
    /// Largest `data` of a client publish or send (`SB_MAX_EVENT_BYTES`,
    /// the same limit ingest applies).
    pub max_event_bytes: usize,
    /// Frames a connection may have waiting (`SB_OUTBOUND_QUEUE`); a full
    /// queue closes it with 4008.
    pub outbound_queue: usize,
    /// Time to drain connections on SIGTERM (`SB_DRAIN_SECS`).
    pub drain: Duration,
    /// The window `reconnect.after_ms` is spread over when draining
    /// (`SB_RECONNECT_SPREAD`, at most the drain time): wide enough that the
    /// other gateways are not hit at once, short enough that clients are
    /// soon back.
    pub reconnect_spread: Duration,
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
            heartbeat: config::positive_duration(src, "SB_HEARTBEAT", Duration::from_secs(25))?,
            max_frame_bytes: config::at_least(
                src,
                "SB_MAX_FRAME_BYTES",
                64 * 1024,
                1024,
                "a whole number of bytes, at least 1024",
            )?,
            max_event_bytes: config::max_event_bytes(src)?,
            outbound_queue: config::at_least(
                src,
                "SB_OUTBOUND_QUEUE",
                1024,
                1,
                "a whole number of frames, at least 1",
            )?,
            drain: Duration::from_secs(config::parsed(
                src,
                "SB_DRAIN_SECS",
                10,
                "a whole number of seconds",
            )?),
            reconnect_spread: config::duration(src, "SB_RECONNECT_SPREAD", Duration::from_secs(2))?,
            room_cache: config::parsed(
                src,
                "SB_GATEWAY_ROOM_CACHE",
                256,
                "a whole number of events (0: none kept)",
            )?,
            replay_concurrency: config::at_least(
                src,
                "SB_REPLAY_CONCURRENCY",
                8,
                1,
                "a whole number of fetches, at least 1",
            )?,
            live_queue: config::at_least(
                src,
                "SB_LIVE_QUEUE",
                switchboard_platform::nats::DEFAULT_SUBSCRIPTION_CAPACITY,
                1,
                "a whole number of messages, at least 1",
            )?,
            presence_refresh: config::positive_duration(
                src,
                "SB_PRESENCE_REFRESH",
                Duration::from_secs(10),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn with(var: &str, value: &str) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = [(var.to_owned(), value.to_owned())].into();
        Settings::from_source(&env)
    }

    #[test]
    fn zero_intervals_queues_and_concurrency_are_refused_by_name() {
        for (var, value) in [
            ("SB_HEARTBEAT", "0ms"),
            ("SB_PRESENCE_REFRESH", "0s"),
            ("SB_OUTBOUND_QUEUE", "0"),
            ("SB_REPLAY_CONCURRENCY", "0"),
            ("SB_LIVE_QUEUE", "0"),
            ("SB_MAX_EVENT_BYTES", "0"),
            ("SB_MAX_FRAME_BYTES", "10"),
        ] {
            let e = with(var, value).expect_err(var);
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(var) && !e.rule.is_empty(), "{e}");
        }
        assert!(with("SB_GATEWAY_ROOM_CACHE", "0").is_ok());
        assert!(with("SB_HEARTBEAT", "1ms").is_ok());
    }
}
