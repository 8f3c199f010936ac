//! analytics builds projections from domain events (`SB_DOMAIN`, durable
//! consumer) into its own tables, and serves them over HTTP. So far it is the
//! service skeleton: settings, NATS with the shared streams, PostgreSQL,
//! `/healthz` `/readyz` `/metrics` and graceful shutdown; the projections
//! come with their issue.

#![forbid(unsafe_code)]

use switchboard_platform::Shutdown;
use switchboard_platform::config::{ConfigError, ProcessEnv};
use switchboard_platform::service::{BasicService, BasicSettings, BuildError};

pub const SERVICE: &str = "analytics";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8082";

pub type Settings = BasicSettings;

pub fn settings_from_env() -> Result<Settings, ConfigError> {
    BasicSettings::from_source(&ProcessEnv, DEFAULT_LISTEN)
}

pub struct Application(BasicService);

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, BuildError> {
        BasicService::build(SERVICE, settings).await.map(Self)
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }

    pub async fn run_until_stopped(self, shutdown: Shutdown) {
        self.0.run_until_stopped(shutdown).await
    }
}
