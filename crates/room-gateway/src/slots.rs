//! Connections per tenant on this gateway, against the tenant's
//! `connections` limit. The limit is enforced per gateway instance: with N
//! gateways a tenant can hold up to N times its limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchboard_proto::TenantId;

#[derive(Clone, Default)]
pub struct ConnectionSlots {
    counts: Arc<Mutex<HashMap<TenantId, u32>>>,
}

/// A held slot; dropping it frees it.
pub struct Slot {
    slots: ConnectionSlots,
    tenant: TenantId,
}

impl ConnectionSlots {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, u32>> {
        self.counts
            .lock()
            .expect("slot lock is never poisoned: no code panics while holding it")
    }

    /// Connections held per tenant.
    pub fn snapshot(&self) -> Vec<(TenantId, u32)> {
        self.counts().iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    /// A slot for one more connection of `tenant`, unless `limit` (0 = none)
    /// is reached.
    pub fn acquire(&self, tenant: &TenantId, limit: u32) -> Option<Slot> {
        let mut counts = self.counts();
        let n = counts.entry(tenant.clone()).or_insert(0);
        if limit != 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts();
        if let Some(n) = counts.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back_when_dropped() {
        let slots = ConnectionSlots::default();
        let t = TenantId::parse("acme").unwrap();
        let a = slots.acquire(&t, 2).unwrap();
        let _b = slots.acquire(&t, 2).unwrap();
        assert!(slots.acquire(&t, 2).is_none());
        drop(a);
        assert!(slots.acquire(&t, 2).is_some());
        assert!(slots.acquire(&t, 0).is_some(), "0 means no limit");
    }
}
