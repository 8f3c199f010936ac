//! Idempotency answers, written behind the requests that gave them. A keyed
//! publish answers its client as soon as JetStream has stored its events
//! and hands the answer here; one task writes the answers waiting, up to
//! [`BATCH`] per statement. Nothing depends on when that happens: a retry
//! that comes first finds its key claimed and unanswered, and is settled
//! against the stream (the same ids published again are deduplicated by
//! JetStream), so it is answered the same and stores nothing twice.

use std::time::Duration;

use switchboard_platform::Shutdown;
use tokio::sync::mpsc;

use crate::repository::Repository;
pub use crate::repository::idempotency::Answer;

/// Answers written per statement at most.
const BATCH: usize = 500;
/// How long the writer lets answers gather before a statement: each costs
/// PostgreSQL some hundred microseconds of CPU here whatever it carries,
/// and nobody waits for these.
const GATHER: Duration = Duration::from_millis(20);
/// Answers waiting at most; past it a request waits for room.
const QUEUE: usize = 10_000;
/// How long the writer keeps trying one batch while PostgreSQL fails.
const RETRY_FOR: Duration = Duration::from_secs(300);
/// How long shutdown waits for the answers still waiting.
const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Completer {
    tx: mpsc::Sender<Answer>,
}

impl Completer {
    /// Starts the writer; it writes what is left and ends after `shutdown`.
    pub fn start(repo: Repository, shutdown: Shutdown) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { tx }, tokio::spawn(run(repo, rx, shutdown)))
    }

    /// Queues an answer to be written (waiting for room when many are).
    pub async fn complete(&self, answer: Answer) {
        if let Err(e) = self.tx.send(answer).await {
            tracing::warn!(key = %e.0.key, "an idempotency answer came after shutdown; a retry of it is settled against the stream");
        }
    }
}

async fn run(repo: Repository, mut rx: mpsc::Receiver<Answer>, mut shutdown: Shutdown) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            got = rx.recv_many(&mut batch, BATCH) => got == 0,
            _ = shutdown.wait() => true,
        };
        if !stopping && batch.len() < BATCH {
            tokio::select! {
                _ = tokio::time::sleep(GATHER) => {}
                _ = shutdown.wait() => {}
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(answer) => batch.push(answer),
                    Err(_) => break,
                }
            }
        }
        if stopping {
            rx.close();
            let left = async {
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    write(&repo, &mut batch).await;
                }
            };
            if tokio::time::timeout(STOP_WAIT, left).await.is_err() {
                tracing::warn!(
                    "idempotency answers left unwritten at shutdown; retries of them are settled against the stream"
                );
            }
            return;
        }
        write(&repo, &mut batch).await;
    }
}

/// Writes `batch` (then empties it), retrying with backoff while
/// PostgreSQL fails.
async fn write(repo: &Repository, batch: &mut Vec<Answer>) {
    let started = tokio::time::Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match repo.complete_keys(batch).await {
            Ok(()) => break,
            Err(e) if started.elapsed() < RETRY_FOR => {
                tracing::warn!(error = %e, answers = batch.len(), "idempotency answers not written yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(error = %e, answers = batch.len(), "idempotency answers given up on; retries of them are settled against the stream");
                break;
            }
        }
    }
    batch.clear();
}
