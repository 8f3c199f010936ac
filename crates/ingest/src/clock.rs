//! Time as ingest sees it. Production reads the system clock; tests use a
//! manual clock they move forward, so quiet hours can end without anyone
//! sleeping. Rate limits are about real load and use `Instant`, not this.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// A cloneable handle to the clock every handler and background loop reads.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None` reads the system clock; a manual clock's time is a watch value,
    /// so a loop that subscribed never misses a move.
    manual: Option<Arc<watch::Sender<DateTime<Utc>>>>,
}

/// Resolves on every move of a manual clock; never for the system clock.
pub struct ClockChanges(Option<watch::Receiver<DateTime<Utc>>>);

impl Clock {
    pub fn system() -> Self {
        Self { manual: None }
    }

    /// A clock that stands still at `start` until moved.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self {
            manual: Some(Arc::new(watch::Sender::new(truncate(start)))),
        }
    }

    /// Now, to the microsecond (PostgreSQL's precision, so what we answer is
    /// exactly what we store).
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            None => truncate(Utc::now()),
            Some(at) => *at.borrow(),
        }
    }

    /// Moves a manual clock to `at`, waking whoever watches its changes. A
    /// system clock ignores it.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Some(m) = &self.manual {
            m.send_replace(truncate(at));
        }
    }

    /// Moves a manual clock forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        self.set(self.now() + by);
    }

    /// Changes from now on.
    pub fn changes(&self) -> ClockChanges {
        ClockChanges(self.manual.as_ref().map(|m| m.subscribe()))
    }
}

impl ClockChanges {
    /// Resolves once the clock moved since the last call (or since
    /// [`Clock::changes`]).
    pub async fn changed(&mut self) {
        if let Some(rx) = &mut self.0
            && rx.changed().await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

fn truncate(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
