//! Exactly once on a moving Redis Cluster (3 masters, 3 replicas, real servers): usage
//! reports retried while their slot moves, half moved (`MIGRATING`/`IMPORTING`, ASK,
//! TRYAGAIN) and by a real `redis-cli --cluster reshard`, or while its master fails
//! over, are counted once; the reshard never meets a key on both nodes (`BUSYKEY`);
//! checks sent meanwhile are counted as they were answered.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::Cluster;
use common::{Client, Process};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

const CONFIGS: &str = "/api/governance/model-configs";
const TOKENS: i64 = 3;
/// Traffic workers, each with its own share of the request ids.
const WORKERS: usize = 6;

async fn fleet(c: &Cluster) -> Vec<Process> {
    fleet_at(&c.url()).await
}

async fn fleet_at(url: &str) -> Vec<Process> {
    let args = [
        "--redis-url",
        url,
        "--redis-mode",
        "cluster",
        "--store-timeout-ms",
        "1000",
        "--on-store-error",
        "deny",
    ];
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Process::spawn(&args, &[]).await);
    }
    procs
}

fn hot_config() -> Value {
    json!({"model_name": "m", "scope": "virtual_key", "scope_id": "vk-hot",
           "rate_limit": {"request_max_limit": 1_000_000, "request_reset_duration": "1h",
                          "token_max_limit": 1_000_000_000, "token_reset_duration": "1h"}})
}

/// A config for every report on another shard, so each report touches two slots.
fn global_config() -> Value {
    json!({"model_name": "m", "rate_limit": {"token_max_limit": 1_000_000_000,
                                             "token_reset_duration": "1h"}})
}

/// The slot of a config's counters (one of the default 3 counter slots, by its id).
fn slot_of(c: &Cluster, id: &str) -> u16 {
    let key = tollgate::store::redis::Keys::new("tollgate:", true)
        .with_counter_slots(3)
        .counters(id);
    cluster::cmd::<i64>(c.ports()[0], &["CLUSTER", "KEYSLOT", &key]).unwrap() as u16
}

/// Sends report `id` until it is answered 200 (503s are retried, as a gateway does);
/// true if this send recorded it.
async fn report(client: &Client, id: usize) -> bool {
    let body = json!({"model": "m", "virtual_key": "vk-hot", "tokens": TOKENS,
                      "request_id": format!("req-{id}")});
    for _ in 0..250 {
        let a = client.post("/v1/usage", &body).await;
        match a.status.as_u16() {
            200 => return a.body["recorded"] == Value::Bool(true),
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            s => panic!("usage report answered {s}: {}", a.body),
        }
    }
    panic!("report {id} never got through");
}

/// Retried reports and checks from every process until `stop`: each id is sent three
/// times (at once, and again 10 and 25 steps later, each time through another process).
/// Returns how often each id was answered `recorded: true`.
struct Traffic {
    recorded: Vec<(usize, bool)>,
    admitted: i64,
    failed_checks: i64,
}

/// Until `n` more reports than now were answered (or 60 s): the movers act on counts, not
/// on time, so a slow machine only makes the test longer.
fn after_reports(sent: &AtomicUsize, n: usize) {
    let target = sent.load(Ordering::Relaxed) + n;
    for _ in 0..6000 {
        if sent.load(Ordering::Relaxed) >= target {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn drive(procs: &[Process], stop: Arc<AtomicBool>, sent: Arc<AtomicUsize>) -> Traffic {
    let clients: Vec<Client> = procs.iter().map(|p| p.client.clone()).collect();
    let admitted = Arc::new(AtomicI64::new(0));
    let failed = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (clients, stop, sent) = (clients.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut step = 0;
            while !stop.load(Ordering::Relaxed) {
                for (n, back) in [0, 10, 25].into_iter().enumerate() {
                    if step >= back {
                        let id = (step - back) * WORKERS + w;
                        out.push((id, report(&clients[(step + n) % 3], id).await));
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                step += 1;
            }
            // The retries still owed.
            for s in step.saturating_sub(25)..step {
                for back in [10, 25] {
                    if s + back >= step {
                        let id = s * WORKERS + w;
                        out.push((id, report(&clients[s % 3], id).await));
                    }
                }
            }
            out
        }));
    }
    for client in clients.iter().take(2) {
        let (client, stop) = (client.clone(), stop.clone());
        let (admitted, failed) = (admitted.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let a = client
                    .check(json!({"model": "m", "virtual_key": "vk-hot"}))
                    .await;
                match a.status.as_u16() {
                    200 => admitted.fetch_add(1, Ordering::Relaxed),
                    429 if a.body["fallback"].is_object() => failed.fetch_add(1, Ordering::Relaxed),
                    s => panic!("check answered {s}: {}", a.body),
                };
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Vec::new()
        }));
    }
    let mut recorded = Vec::new();
    for t in tasks {
        recorded.extend(t.await.unwrap());
    }
    Traffic {
        recorded,
        admitted: admitted.load(Ordering::Relaxed),
        failed_checks: failed.load(Ordering::Relaxed),
    }
}

/// Sets `stop` when dropped: traffic ends also when the mover fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Every id sent, and those answered `recorded: true` more than once.
fn tally(recorded: &[(usize, bool)]) -> (Vec<usize>, Vec<usize>) {
    let mut trues: HashMap<usize, usize> = HashMap::new();
    for &(id, rec) in recorded {
        *trues.entry(id).or_default() += usize::from(rec);
    }
    let twice = trues.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id);
    (trues.keys().copied().collect(), twice.collect())
}

async fn usage(client: &Client, id: &str) -> (i64, i64) {
    let c = client.config(id).await;
    (
        c["rate_limit"]["request_current_usage"]
            .as_i64()
            .unwrap_or(0),
        c["rate_limit"]["token_current_usage"].as_i64().unwrap(),
    )
}

/// Every id once more: all must be duplicates now (unless `lossy`: a failover may lose
/// what the dying master acknowledged, markers and counts alike, which this retry then
/// records); then the counters must hold each id exactly once, and checks exactly as
/// answered (at most the failed ones more: a check whose connection broke after Redis
/// ran it stays charged).
async fn verify(
    procs: &[Process],
    ids: &[usize],
    (hot, global): (&str, &str),
    traffic: &Traffic,
    lossy: bool,
) {
    let client = &procs[0].client;
    let again = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (client, again) = (procs[w % 3].client.clone(), again.clone());
        let mine: Vec<usize> = ids.iter().copied().filter(|id| id % WORKERS == w).collect();
        tasks.push(tokio::spawn(async move {
            for id in mine {
                if report(&client, id).await {
                    again.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (requests, tokens) = usage(client, hot).await;
    let (_, global_tokens) = usage(client, global).await;
    let expected = ids.len() as i64 * TOKENS;
    let again = again.load(Ordering::Relaxed);
    if lossy {
        eprintln!(
            "{again} of {} ids lost in the failover, recorded again",
            ids.len()
        );
    } else {
        assert_eq!(again, 0, "ids recorded again on a final retry");
    }
    assert_eq!(tokens, expected, "hot config: each report counted once");
    assert_eq!(
        global_tokens, expected,
        "other shard: each report counted once"
    );
    // A failover may also lose admitted checks' counts (the dying master's last ones).
    assert!(
        (lossy || traffic.admitted <= requests)
            && requests <= traffic.admitted + traffic.failed_checks,
        "checks: {} admitted, {} failed, {requests} counted",
        traffic.admitted,
        traffic.failed_checks
    );
}

/// The global config, in a counter slot other than `hot_slot`'s, so that each report
/// touches two slots.
async fn global_elsewhere(client: &Client, slot: impl Fn(&str) -> u16, hot_slot: u16) -> String {
    for _ in 0..20 {
        let id = client.create(global_config()).await;
        if slot(&id) != hot_slot {
            return id;
        }
        assert_eq!(client.delete(&format!("{CONFIGS}/{id}")).await.status, 200);
    }
    panic!("no global config landed in another slot in 20 tries");
}

/// The hot config, on a slot `s` of master `a`, and a master `b` whose lowest slot is
/// above `s` (so once `b` holds `s`, a reshard of `b`'s lowest slot moves exactly `s`).
async fn hot_slot(client: &Client, c: &Cluster) -> (String, u16, u16, u16) {
    for _ in 0..20 {
        let id = client.create(hot_config()).await;
        let s = slot_of(c, &id);
        let a = c.master_of(s);
        let above = c
            .masters()
            .into_iter()
            .filter(|&m| m != a && c.lowest_slot(m).is_some_and(|low| low > s))
            .min_by_key(|&m| c.lowest_slot(m));
        if let Some(b) = above {
            return (id, s, a, b);
        }
        assert_eq!(client.delete(&format!("{CONFIGS}/{id}")).await.status, 200);
    }
    panic!("no config landed below another master's slots in 20 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_retried_while_their_slot_moves_count_once() {
    let c = Arc::new(Cluster::start());
    let procs = fleet(&c).await;
    let client = procs[0].client.clone();
    let (hot, s, a, b) = hot_slot(&client, &c).await;
    let global = global_elsewhere(&client, |id| slot_of(&c, id), s).await;
    for p in &procs {
        let seen = common::eventually(Duration::from_secs(3), || async {
            p.check(json!({"model": "m", "virtual_key": "vk-hot", "dry_run": true}))
                .await
                .body["limits"]
                .as_array()
                .is_some_and(|l| l.len() == 3)
        })
        .await;
        assert!(seen, "every replica sees both configs");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mover = {
        let (c, stop, sent) = (c.clone(), stop.clone(), sent.clone());
        tokio::task::spawn_blocking(move || {
            let _stop = StopOnDrop(stop);
            after_reports(&sent, 150);
            for _ in 0..2 {
                // Half moved for a while: a few keys per MIGRATE, with pauses.
                c.migrate_slot_paced(s, a, b, 5, Duration::from_millis(15));
                after_reports(&sent, 50);
                // Back by redis-cli: `s` is now `b`'s lowest slot.
                assert_eq!(c.lowest_slot(b), Some(s));
                let (ok, out) = c.reshard(b, a, 1);
                assert!(ok && !out.contains("BUSYKEY"), "reshard failed:\n{out}");
                assert!(out.contains("Moving slot"), "reshard moved nothing:\n{out}");
                assert_eq!(c.wait_settled(s), a, "the reshard moved slot {s} back");
                after_reports(&sent, 100);
            }
        })
    };
    let traffic = drive(&procs, stop, sent).await;
    mover.await.unwrap();
    let (ids, twice) = tally(&traffic.recorded);
    assert!(
        ids.len() > 100,
        "enough reports while the slot moved ({})",
        ids.len()
    );
    assert!(twice.is_empty(), "ids recorded twice: {twice:?}");
    verify(&procs, &ids, (&hot, &global), &traffic, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_retried_through_a_master_failover_count_once() {
    let c = Arc::new(std::sync::Mutex::new(Cluster::start()));
    let url = c.lock().unwrap().url();
    let procs = fleet_at(&url).await;
    let client = procs[0].client.clone();
    let hot = client.create(hot_config()).await;
    let s = slot_of(&c.lock().unwrap(), &hot);
    let global = global_elsewhere(&client, |id| slot_of(&c.lock().unwrap(), id), s).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (c, stop, sent) = (c.clone(), stop.clone(), sent.clone());
        tokio::task::spawn_blocking(move || {
            let _stop = StopOnDrop(stop);
            after_reports(&sent, 200);
            let mut c = c.lock().unwrap();
            let old = c.master_of(s);
            c.kill(old);
            let took_over = (0..300).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                ![0, old].contains(&c.master_of(s))
            });
            assert!(took_over, "a replica took over slot {s}");
            drop(c);
            after_reports(&sent, 150);
        })
    };
    let traffic = drive(&procs, stop, sent).await;
    killer.await.unwrap();
    let (ids, _) = tally(&traffic.recorded);
    assert!(
        ids.len() > 100,
        "enough reports around the failover ({})",
        ids.len()
    );
    // A report acknowledged by the dying master may be lost with it (asynchronous
    // replication) and recorded again by a retry: the counters must still hold each id
    // exactly once.
    verify(&procs, &ids, (&hot, &global), &traffic, true).await;
}
