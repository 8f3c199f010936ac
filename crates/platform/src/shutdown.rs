//! One shutdown signal for the whole process. `run_until_stopped` takes a
//! [`Shutdown`] so tests can fire it with the [`ShutdownTrigger`].

use tokio::sync::watch;

/// Fires the shutdown. Dropping it fires it too, so a test that forgets
/// cannot leave a service running.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Resolves when shutdown was asked for; cheap to clone into every loop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Shutdown {
    pub async fn wait(&mut self) {
        // An error means the trigger is gone, which also means stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// A shutdown that fires on SIGTERM or SIGINT.
    pub fn on_signals() -> Self {
        let (trigger, shutdown) = channel();
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutdown signal received");
            trigger.fire();
        });
        shutdown
    }
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler only fails outside a Tokio runtime");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
