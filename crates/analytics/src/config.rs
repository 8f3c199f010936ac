//! analytics' settings, from `SB_*` variables (README lists them all).

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_platform::config::{self, ConfigError, ProcessEnv, Source};
use switchboard_platform::nats::StreamSettings;
use switchboard_proto::TenantId;

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub database_url: String,
    pub streams: StreamSettings,
    pub db_pool_size: usize,
    /// The durable consumer of `SB_DOMAIN` (`SB_ANALYTICS_CONSUMER`);
    /// instances that share a name share the work.
    pub consumer: String,
    /// Domain events applied per transaction at most (`SB_ANALYTICS_BATCH`).
    pub batch: usize,
    /// How often `analytics.updated` goes out per tenant at most
    /// (`SB_ANALYTICS_UPDATE_EVERY`).
    pub update_every: Duration,
    /// How often `metrics` and `system.metrics` go out
    /// (`SB_METRICS_EVERY`).
    pub metrics_every: Duration,
    /// The operators' tenant, whose rooms `system:metrics` and
    /// `system:alerts` get the system's figures (`SB_SYSTEM_TENANT`).
    pub system_tenant: TenantId,
    /// Domain events waiting beyond which the projection's lag is an alert
    /// (`SB_ALERT_LAG_EVENTS`).
    pub alert_lag_events: u64,
    /// Slow-consumer cut-offs across gateways per metrics interval beyond
    /// which they are an alert (`SB_ALERT_SLOW_CLOSES`).
    pub alert_slow_closes: u64,
    /// A gateway silent this long is an alert (`SB_ALERT_GATEWAY_SILENT`).
    pub alert_gateway_silent: Duration,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let system = config::string(src, "SB_SYSTEM_TENANT", "system");
        let system_tenant = TenantId::parse(system.clone()).map_err(|e| ConfigError {
            var: "SB_SYSTEM_TENANT".into(),
            value: system,
            rule: format!("a tenant id matching {}", e.rule),
        })?;
        Ok(Self {
            listen: config::listen(src, "127.0.0.1:8082")?,
            nats_url: config::string(src, "SB_NATS_URL", "nats://127.0.0.1:4222"),
            database_url: config::string(
                src,
                "SB_DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/switchboard",
            ),
            streams: StreamSettings::from_source(src)?,
            db_pool_size: config::at_least(
                src,
                "SB_DB_POOL_SIZE",
                8,
                1,
                "a whole number of connections, at least 1",
            )?,
            consumer: config::string(src, "SB_ANALYTICS_CONSUMER", "analytics"),
            batch: config::at_least(
                src,
                "SB_ANALYTICS_BATCH",
                1000,
                1,
                "a whole number of events, at least 1",
            )?,
            update_every: config::positive_duration(
                src,
                "SB_ANALYTICS_UPDATE_EVERY",
                Duration::from_secs(1),
            )?,
            metrics_every: config::positive_duration(
                src,
                "SB_METRICS_EVERY",
                Duration::from_secs(5),
            )?,
            system_tenant,
            alert_lag_events: config::parsed(
                src,
                "SB_ALERT_LAG_EVENTS",
                10_000,
                "a whole number of events",
            )?,
            alert_slow_closes: config::parsed(
                src,
                "SB_ALERT_SLOW_CLOSES",
                50,
                "a whole number of cut-offs",
            )?,
            alert_gateway_silent: config::positive_duration(
                src,
                "SB_ALERT_GATEWAY_SILENT",
                Duration::from_secs(5),
            )?,
        })
    }
}
