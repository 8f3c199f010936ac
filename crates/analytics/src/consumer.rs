//! The projection's durable consumer of `SB_DOMAIN`. It pulls domain events
//! in batches, applies each batch in one transaction, and acknowledges the
//! batch only after that commits: a crash before means a redelivery, which
//! the newest-wins facts make harmless. An event that cannot be decoded is
//! counted, logged once with its stream sequence, copied to
//! `sb.dead.analytics` and acknowledged — never retried, never blocking the
//! ones behind it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use switchboard_platform::Shutdown;
use switchboard_proto::subjects;
use tokio::sync::mpsc;

use crate::facts::{self, Fact};
use crate::repository::projection::Batch;
use crate::state::AppState;

/// How long a pull waits for a batch to fill before applying what came.
const FILL_WAIT: Duration = Duration::from_millis(200);
/// How long a batch may take before it is redelivered.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Events handed out and not yet acknowledged, at most.
const MAX_ACK_PENDING: i64 = 100_000;

/// The consumer's configuration (created, or updated, at start).
pub fn config(name: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some("analytics: the projection of domain events".into()),
        filter_subject: subjects::DOMAIN_ALL.into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    }
}

/// Applies domain events until `shutdown`; tells `changed` which tenants'
/// suggestion figures each batch changed.
pub async fn run(state: AppState, changed: mpsc::Sender<BTreeSet<String>>, mut shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let consumer = tokio::select! {
            _ = shutdown.wait() => return,
            c = open(&state) => c,
        };
        let consumer = match consumer {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, "the domain event consumer is not there yet; retrying");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let pulled = tokio::select! {
                _ = shutdown.wait() => return,
                b = pull(&consumer, state.settings.batch) => b,
            };
            match pulled {
                Ok(msgs) if msgs.is_empty() => continue,
                Ok(msgs) => {
                    if let Some(tenants) = apply(&state, msgs).await
                        && !tenants.is_empty()
                    {
                        let _ = changed.try_send(tenants);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pulling domain events failed; opening the consumer again");
                    break;
                }
            }
        }
    }
}

async fn open(state: &AppState) -> Result<consumer::PullConsumer, async_nats::Error> {
    let stream = state
        .bus
        .jetstream
        .get_stream(subjects::DOMAIN_STREAM)
        .await?;
    let name = &state.settings.consumer;
    Ok(stream.get_or_create_consumer(name, config(name)).await?)
}

async fn pull(
    consumer: &consumer::PullConsumer,
    max: usize,
) -> Result<Vec<jetstream::Message>, async_nats::Error> {
    let mut batch = consumer
        .batch()
        .max_messages(max)
        .expires(FILL_WAIT)
        .messages()
        .await?;
    let mut out = Vec::with_capacity(max.min(1024));
    while let Some(m) = batch.next().await {
        out.push(m?);
    }
    Ok(out)
}

/// Applies a pulled batch; acknowledges it after the commit (or makes it
/// come again when the database failed). Answers the tenants it changed.
async fn apply(state: &AppState, msgs: Vec<jetstream::Message>) -> Option<BTreeSet<String>> {
    let started = Instant::now();
    let mut batch = Batch::default();
    let mut applied = 0u64;
    for m in &msgs {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or_default();
        match facts::decode(&m.payload) {
            Ok((tenant, fact)) => {
                let t = tenant.to_string();
                match fact {
                    Fact::Suggestion(row) => batch.suggestions.push(row),
                    Fact::Connection(f, closed) => batch.connections.push((t.clone(), f, closed)),
                    Fact::Task(f) => batch.tasks.push((t.clone(), f)),
                    Fact::Other => continue,
                }
                applied += 1;
                let v = batch.versions.entry(t).or_default();
                *v = (*v).max(seq);
            }
            Err(e) => dead_letter(state, m, seq, &e).await,
        }
    }
    let changed = if batch.is_empty() {
        Ok(BTreeSet::new())
    } else {
        state.repo.apply(&batch).await
    };
    match changed {
        Ok(changed) => {
            for m in &msgs {
                if let Err(e) = m.ack().await {
                    tracing::debug!(error = %e, "ack not sent; the event comes again and changes nothing");
                }
            }
            state.metrics.facts_applied.inc_by(applied);
            state
                .metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
            Some(changed)
        }
        Err(e) => {
            tracing::warn!(error = %e, events = msgs.len(), "applying domain events failed; they come again");
            for m in &msgs {
                let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        }
    }
}

/// Counts and logs an undecodable event once, copies it to the dead
/// letters with where it came from, and acknowledges it (the batch's ack
/// does).
async fn dead_letter(state: &AppState, m: &jetstream::Message, seq: u64, why: &facts::Undecodable) {
    state.metrics.dead_letters.inc();
    tracing::warn!(seq, subject = %m.subject, error = %why, "undecodable domain event sent to the dead letters");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Sb-Dead-Subject", m.subject.as_str());
    headers.insert("Sb-Dead-Seq", seq.to_string().as_str());
    headers.insert("Sb-Dead-Reason", why.to_string().as_str());
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("dead-analytics-{seq}").as_str(),
    );
    let stored = state
        .bus
        .jetstream
        .publish_with_headers(
            subjects::dead_letter("analytics"),
            headers,
            m.payload.clone(),
        )
        .await;
    match stored {
        Ok(ack) => {
            if let Err(e) = ack.await {
                tracing::warn!(seq, error = %e, "a dead letter was not stored");
            }
        }
        Err(e) => tracing::warn!(seq, error = %e, "a dead letter was not stored"),
    }
}
