//! `Gateway`: what every session of this instance shares.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use switchboard_platform::Shutdown;

use crate::audit::Audit;
use crate::bus::Bus;
use crate::config::Settings;
use crate::hub::RoomHub;
use crate::presence::Presence;
use crate::slots::ConnectionSlots;
use crate::tenants::TenantDirectory;

#[derive(Clone)]
pub struct Gateway {
    pub hub: RoomHub,
    pub tenants: TenantDirectory,
    pub bus: Bus,
    pub presence: Presence,
    pub audit: Audit,
    pub slots: ConnectionSlots,
    /// Sessions still running (closing ones included): the gateway stops
    /// its server only when these are done or the drain time is up.
    pub sessions: Arc<AtomicUsize>,
    pub settings: Arc<Settings>,
    /// Fired when the gateway starts draining.
    pub shutdown: Shutdown,
}
