//! Config-change notifications over pub/sub.

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Pokes `changes` on every config change announced on the channel, and after every
/// (re)subscription, since changes may have been missed while disconnected. The
/// periodic version poll covers the rest.
pub(super) async fn listen_for_changes(
    client: redis::Client,
    channel: String,
    changes: Arc<Notify>,
) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    changes.notify_one();
                    let mut messages = pubsub.on_message();
                    while messages.next().await.is_some() {
                        changes.notify_one();
                    }
                    tracing::warn!("config change subscription lost; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to config changes"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect for config changes"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
