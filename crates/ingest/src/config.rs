//! ingest's settings, from `SB_*` variables (README lists them all).

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_platform::config::{self, ConfigError, ProcessEnv, Source};
use switchboard_platform::nats::StreamSettings;

#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub database_url: String,
    /// `None` disables the admin API (it answers 401 saying so).
    pub admin_token: Option<String>,
    pub streams: StreamSettings,
    pub db_pool_size: usize,
    /// Largest `data` of one event, in bytes of JSON (`SB_MAX_EVENT_BYTES`).
    pub max_event_bytes: usize,
    /// Most events, or suggestions, in one batch request (`SB_MAX_BATCH_EVENTS`).
    pub max_batch_events: usize,
    /// How often the delivery loop looks for held notifications that are due
    /// (`SB_NOTIFY_POLL`).
    pub notify_poll: Duration,
    /// Every this many stored events one is timed hop by hop
    /// (`SB_HOP_SAMPLE`; 0: none).
    pub hop_sample: u64,
    /// Whether a batch is stored as one JetStream atomic batch, all or none
    /// (`SB_BATCH_ATOMIC`), rather than as pipelined publishes.
    pub batch_atomic: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("nats_url", &self.nats_url)
            .field("database_url", &self.database_url)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: config::listen(src, "127.0.0.1:8081")?,
            nats_url: config::string(src, "SB_NATS_URL", "nats://127.0.0.1:4222"),
            database_url: config::string(
                src,
                "SB_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/switchboard",
            ),
            admin_token: config::admin_token(src)?,
            streams: StreamSettings::from_source(src)?,
            // Few connections: each statement costs PostgreSQL a wake-up,
            // and fewer, busier backends stay warm (measured: 16 → 4 took
            // PostgreSQL from 0.27 to 0.20 cores at 1,000 keyed publishes/s).
            db_pool_size: config::at_least(
                src,
                "SB_DB_POOL_SIZE",
                8,
                1,
                "a whole number of connections, at least 1",
            )?,
            max_event_bytes: config::max_event_bytes(src)?,
            max_batch_events: max_batch_events(src)?,
            notify_poll: config::duration(src, "SB_NOTIFY_POLL", Duration::from_secs(1))?,
            batch_atomic: config::boolean(src, "SB_BATCH_ATOMIC", false)?,
            hop_sample: config::parsed(
                src,
                "SB_HOP_SAMPLE",
                100,
                "a whole number of events (0: none are timed)",
            )?,
        })
    }
}

/// The most events in one batch request: at least 1, and at most what one
/// JetStream atomic batch holds (nats-server's
/// `jetstream.limits.batch.max_msgs`, 1000 unless configured).
const MAX_BATCH_RULE: &str =
    "a whole number of events from 1 to 1000 (one JetStream atomic batch holds at most 1000)";

fn max_batch_events(src: &dyn Source) -> Result<usize, ConfigError> {
    let n = config::at_least(src, "SB_MAX_BATCH_EVENTS", 1000, 1, MAX_BATCH_RULE)?;
    if n > 1000 {
        return Err(ConfigError {
            var: "SB_MAX_BATCH_EVENTS".into(),
            value: n.to_string(),
            rule: MAX_BATCH_RULE.into(),
        });
    }
    Ok(n)
}
