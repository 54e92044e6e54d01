//! Config-change notifications over pub/sub, on whichever master is current (or any
//! node of a Redis Cluster).

use super::connection::Master;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often the subscription is checked with a PING, and how long the answer may take:
/// a subscription whose connection died silently (no RST: a host gone, a NAT entry
/// dropped) is noticed within about `PING_EVERY + PING_TIMEOUT`, whatever the poll.
const PING_EVERY: Duration = Duration::from_secs(2);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Pokes `changes` on every config change announced on the channel, and after every
/// (re)subscription, since changes may have been missed while disconnected. The
/// periodic version poll covers the rest. When the master changes (sentinel failover)
/// it subscribes on the new one: the old one may be dead, or a replica that no longer
/// hears the writes.
///
/// `cluster_seeds`: on Redis Cluster, the seed nodes, tried in turn (a cluster carries
/// every `PUBLISH` to every node, so any node will do); empty otherwise.
pub(super) async fn listen_for_changes(
    master: Arc<Master>,
    cluster_seeds: Vec<redis::Client>,
    channel: String,
    changes: Arc<Notify>,
) {
    let mut moved = master.changes();
    let mut attempt = 0usize;
    'follow: loop {
        moved.borrow_and_update();
        let client = if cluster_seeds.is_empty() {
            master.client()
        } else {
            attempt = attempt.wrapping_add(1);
            Some(cluster_seeds[attempt % cluster_seeds.len()].clone())
        };
        let Some(client) = client else {
            // Sentinel mode before the first discovery.
            let _ = tokio::time::timeout(PING_EVERY, moved.changed()).await;
            continue;
        };
        match tokio::time::timeout(PING_EVERY, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => {
                let (mut sink, mut messages) = pubsub.split();
                match sink.subscribe(&channel).await {
                    Ok(()) => {
                        changes.notify_one();
                        let mut ticks = tokio::time::interval(PING_EVERY);
                        loop {
                            tokio::select! {
                                message = messages.next() => match message {
                                    Some(_) => changes.notify_one(),
                                    None => break,
                                },
                                _ = ticks.tick() => {
                                    let ping = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>());
                                    if !matches!(ping.await, Ok(Ok(_))) {
                                        break;
                                    }
                                }
                                _ = moved.changed() => {
                                    tracing::info!("Redis master changed; resubscribing to config changes on it");
                                    continue 'follow;
                                }
                            }
                        }
                        tracing::warn!("config change subscription lost; resubscribing");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to config changes"),
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot connect for config changes"),
            Err(_) => tracing::debug!("connecting for config changes timed out"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
