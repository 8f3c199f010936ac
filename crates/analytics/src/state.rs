//! What the HTTP handlers and the background loops share.

use std::sync::Arc;

use switchboard_platform::callers::Callers;
use switchboard_platform::nats::Bus;

use crate::config::Settings;
use crate::metrics::AnalyticsMetrics;
use crate::repository::Repository;

#[derive(Clone)]
pub struct AppState {
    pub repo: Repository,
    pub bus: Bus,
    pub callers: Callers,
    pub settings: Arc<Settings>,
    pub metrics: Arc<AnalyticsMetrics>,
}
