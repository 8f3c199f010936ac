//! `sb.ctl.apikey.owner`: other services (analytics, the orchestrator) ask
//! which tenant owns an API key — ingest owns the keys and no other service
//! reads its tables. The request is the key's SHA-256 hash; the reply the
//! tenant id, or empty for no live key. Instances answer as one queue group.

use futures_util::StreamExt;
use switchboard_platform::Shutdown;
use switchboard_proto::subjects;

use crate::state::AppState;

const QUEUE_GROUP: &str = "ingest";

/// Answers owner requests until `shutdown`.
pub async fn serve(
    state: AppState,
    mut shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    let client = state.bus.client.clone();
    let mut requests = client
        .queue_subscribe(subjects::API_KEY_OWNER, QUEUE_GROUP.into())
        .await?;
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                _ = shutdown.wait() => break,
                msg = requests.next() => match msg {
                    Some(m) => m,
                    None => break,
                },
            };
            let Some(reply) = msg.reply else { continue };
            let hash = msg.payload.to_vec();
            let owner = match state.keys.get(&hash) {
                Some(owner) => Ok(owner),
                None => state.repo.tenant_of_key(&hash).await.inspect(|owner| {
                    state.keys.put(&hash, owner.clone());
                }),
            };
            match owner {
                Ok(owner) => {
                    let answer = owner.unwrap_or_default().into_bytes();
                    if let Err(e) = client.publish(reply, answer.into()).await {
                        tracing::warn!(error = %e, "answering who owns an API key failed");
                    }
                }
                // No answer: the asker times out and says it could not check.
                Err(e) => tracing::warn!(error = %e, "looking up an API key's owner failed"),
            }
        }
    }))
}
