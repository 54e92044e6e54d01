//! Sentinel mode: find the master from the sentinels, and follow it through failovers.
//!
//! Discovery asks one sentinel after another `SENTINEL get-master-addr-by-name`, and
//! trusts the answer only once the named server says `ROLE` master (a sentinel can still
//! name a master that just died, or one demoted but not yet noticed). It runs at start,
//! whenever a store call suggests the master moved (connection lost, `READONLY`,
//! timeout), on every `+switch-master` the sentinels publish, and every few seconds.
//! Until a new master is confirmed, calls go to the old one, fail, and are answered by
//! `--on-store-error`: only for the seconds the failover takes.

use super::connection::Master;
use crate::log_throttle::LogThrottle;
use futures_util::StreamExt;
use redis::aio::ConnectionManagerConfig;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use redis::{RedisConnectionInfo, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Pause before asking again when no sentinel names a live master (mid-failover).
const RETRY: Duration = Duration::from_millis(100);
/// A look even when nothing suggests a change: catches a switch whose message and
/// errors were both missed (no traffic, subscription down).
const VERIFY_EVERY: Duration = Duration::from_secs(5);
/// Least time between two discoveries that found the master where it was: a burst of
/// failing calls (an overloaded master timing out) must not become a burst of new
/// connections to it.
const MIN_GAP: Duration = Duration::from_millis(250);
/// How often the `+switch-master` subscription is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(2);

/// The sentinels and how to reach the master they name.
pub(super) struct Sentinels {
    nodes: Vec<ConnectionInfo>,
    master_name: String,
    master_username: Option<String>,
    master_password: Option<String>,
    /// Bound on each connection attempt and reply (sentinel or master).
    timeout: Duration,
    /// The sentinel that answered last is asked first.
    first: AtomicUsize,
}

impl Sentinels {
    /// `urls`: the sentinels, each `redis://[user:password@]host:port` (or `rediss://`).
    /// The master is reached with TLS if its sentinel is, with `master_username` and
    /// `master_password` when given (empty: none), else the sentinel URL's credentials.
    pub(super) fn parse(
        urls: &[String],
        master_name: &str,
        master_username: Option<String>,
        master_password: Option<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let nodes = urls
            .iter()
            .map(|u| {
                u.as_str()
                    .into_connection_info()
                    .map_err(|e| format!("invalid sentinel URL: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nodes.is_empty() {
            return Err("sentinel mode needs at least one sentinel URL".into());
        }
        Ok(Sentinels {
            nodes,
            master_name: master_name.trim().to_string(),
            master_username,
            master_password,
            timeout,
            first: AtomicUsize::new(0),
        })
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
    }

    /// What sentinel `i` says the master's address is.
    async fn ask(&self, i: usize) -> Result<(String, u16), String> {
        let node = &self.nodes[i];
        let client = Client::open(node.clone()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&self.connection_config())
            .await
            .map_err(|e| format!("sentinel {}: {e}", node.addr()))?;
        let reply: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("sentinel {}: {e}", node.addr()))?;
        let (host, port) = reply.ok_or_else(|| {
            format!(
                "sentinel {} does not monitor a master named {:?}",
                node.addr(),
                self.master_name
            )
        })?;
        let port = port
            .parse()
            .map_err(|_| format!("sentinel {} named port {port:?}", node.addr()))?;
        Ok((host, port))
    }

    /// How to reach the master at `host:port`, as learnt from sentinel `i`.
    fn master_info(&self, i: usize, host: String, port: u16) -> ConnectionInfo {
        let sentinel = &self.nodes[i];
        let addr = match sentinel.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let given = sentinel.redis_settings();
        let mut redis = RedisConnectionInfo::default()
            .set_db(given.db())
            .set_protocol(given.protocol());
        let username = self.master_username.as_deref().or(given.username());
        let password = self.master_password.as_deref().or(given.password());
        if let Some(u) = username.filter(|u| !u.is_empty()) {
            redis = redis.set_username(u);
        }
        if let Some(p) = password.filter(|p| !p.is_empty()) {
            redis = redis.set_password(p);
        }
        sentinel.clone().set_addr(addr).set_redis_settings(redis)
    }

    /// The master's address and a client for it, once it confirms it is the master.
    async fn discover(&self) -> Result<(String, Client), String> {
        let n = self.nodes.len();
        let start = self.first.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let found = async {
                let (host, port) = self.ask(i).await?;
                let addr = format!("{host}:{port}");
                let client = Client::open(self.master_info(i, host, port))
                    .map_err(|e| format!("master {addr}: {e}"))?;
                self.verify_master(&client)
                    .await
                    .map_err(|e| format!("master {addr} (named by sentinel): {e}"))?;
                Ok::<_, String>((addr, client))
            };
            match tokio::time::timeout(self.timeout * 3, found).await {
                Ok(Ok(found)) => {
                    self.first.store(i, Ordering::Relaxed);
                    return Ok(found);
                }
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(format!("sentinel {} timed out", self.nodes[i].addr())),
            }
        }
        // Every sentinel naming the same unusable master says the same thing once.
        errors.sort();
        errors.dedup();
        Err(errors.join("; "))
    }

    /// `ROLE` says master.
    async fn verify_master(&self, client: &Client) -> Result<(), String> {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&self.connection_config())
            .await
            .map_err(|e| e.to_string())?;
        let role: Vec<Value> = redis::cmd("ROLE")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        match role.first() {
            Some(Value::BulkString(b)) if b.as_slice() == b"master" => Ok(()),
            Some(Value::SimpleString(s)) if s == "master" => Ok(()),
            other => Err(format!("its ROLE is {other:?}, not master")),
        }
    }
}

/// Keeps `master` on the master the sentinels name. Runs for the store's lifetime.
pub(super) async fn follow(
    master: Arc<Master>,
    sentinels: Arc<Sentinels>,
    config: ConnectionManagerConfig,
) {
    static FAILED: LogThrottle = LogThrottle::new(5_000);
    loop {
        match sentinels.discover().await {
            Ok((addr, client)) if master.addr().as_deref() != Some(addr.as_str()) => {
                let connected = tokio::time::timeout(
                    sentinels.timeout * 2,
                    client.get_connection_manager_with_config(config.clone()),
                )
                .await;
                match connected {
                    Ok(Ok(conn)) => {
                        let was = master.addr();
                        master.install(addr.clone(), client, conn);
                        match was {
                            Some(was) => {
                                metrics::counter!(crate::metrics::REDIS_MASTER_SWITCHES)
                                    .increment(1);
                                tracing::warn!(from = %was, to = %addr,
                                    master = %sentinels.master_name, "Redis master moved; following it")
                            }
                            None => tracing::info!(%addr, master = %sentinels.master_name,
                                "Redis master found through the sentinels"),
                        }
                    }
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_string(),
                        };
                        tracing::warn!(%addr, %error, "cannot connect to the new master; asking again");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            }
            Ok(_) => tokio::time::sleep(MIN_GAP).await,
            Err(error) => {
                master.not_found(&error);
                if let Some(more) = FAILED.allow(chrono::Utc::now().timestamp_millis()) {
                    tracing::warn!(%error, also_since_last_line = more, master = %sentinels.master_name,
                        "no sentinel names a live master yet; asking again");
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        }
        tokio::select! {
            _ = master.suspected() => {}
            _ = tokio::time::sleep(VERIFY_EVERY) => {}
        }
    }
}

/// Subscribes to `+switch-master` on one sentinel (the next one when it fails) and
/// pokes the follower on every switch of our master, and after every (re)subscription
/// since a switch may have been missed meanwhile.
pub(super) async fn watch_switches(master: Arc<Master>, sentinels: Arc<Sentinels>) {
    let mut i = 0;
    loop {
        let node = &sentinels.nodes[i];
        let subscribed = async {
            let client = Client::open(node.clone()).map_err(|e| e.to_string())?;
            let pubsub = tokio::time::timeout(sentinels.timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let (mut sink, messages) = pubsub.split();
            sink.subscribe("+switch-master")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((sink, messages))
        };
        match subscribed.await {
            Ok((mut sink, mut messages)) => {
                master.suspect();
                let mut ticks = tokio::time::interval(PING_EVERY);
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(m) => {
                                // "<name> <old-ip> <old-port> <new-ip> <new-port>"
                                let payload: String = m.get_payload().unwrap_or_default();
                                if payload.split(' ').next() == Some(sentinels.master_name.as_str()) {
                                    tracing::info!(switch = %payload, "sentinel announced a new master");
                                    master.suspect();
                                }
                            }
                            None => break,
                        },
                        _ = ticks.tick() => {
                            let ping = tokio::time::timeout(sentinels.timeout, sink.ping::<Value>());
                            if !matches!(ping.await, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::debug!(sentinel = %node.addr(), "+switch-master subscription lost");
            }
            Err(e) => {
                tracing::debug!(sentinel = %node.addr(), error = %e, "cannot subscribe to +switch-master")
            }
        }
        i = (i + 1) % sentinels.nodes.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinels(urls: &[&str], user: Option<&str>, password: Option<&str>) -> Sentinels {
        let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let (user, password) = (user.map(String::from), password.map(String::from));
        Sentinels::parse(&urls, " m ", user, password, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn the_master_is_reached_like_its_sentinel_unless_told_otherwise() {
        let s = sentinels(
            &["redis://u:spw@s1:26379/2", "rediss://s2:26379"],
            None,
            None,
        );
        assert_eq!(s.master_name, "m");
        let plain = s.master_info(0, "10.0.0.5".into(), 6380);
        assert_eq!(plain.addr().to_string(), "10.0.0.5:6380");
        assert!(matches!(plain.addr(), ConnectionAddr::Tcp(..)));
        let r = plain.redis_settings();
        assert_eq!(
            (r.username(), r.password(), r.db()),
            (Some("u"), Some("spw"), 2)
        );
        let tls = s.master_info(1, "10.0.0.6".into(), 6381);
        assert!(matches!(
            tls.addr(),
            ConnectionAddr::TcpTls { port: 6381, .. }
        ));

        let s = sentinels(&["redis://:spw@s1:26379"], Some(""), Some("mpw"));
        let r = s.master_info(0, "h".into(), 1).redis_settings().clone();
        assert_eq!((r.username(), r.password()), (None, Some("mpw")));
        let s = sentinels(&["redis://:spw@s1:26379"], None, Some(""));
        assert_eq!(
            s.master_info(0, "h".into(), 1).redis_settings().password(),
            None
        );
        let err = Sentinels::parse(
            &["nonsense".into()],
            "m",
            None,
            None,
            Duration::from_secs(1),
        );
        assert!(err.is_err());
    }
}
