//! The load: HTTP and direct-script workers, and what they tally.

use super::*;

#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) measure_from: Instant,
    pub(crate) end: Instant,
    /// Open loop (`--rate`): each worker sends on a fixed schedule, one request every
    /// `interval` from `first`, whether or not earlier answers are late.
    pub(crate) interval: Option<Duration>,
    pub(crate) first: Instant,
}

impl Window {
    pub(crate) fn new(opts: &Opts) -> Self {
        let now = Instant::now();
        let measure_from = now + opts.warmup;
        Window {
            measure_from,
            end: measure_from + opts.duration,
            interval: opts
                .rate
                .map(|r| Duration::from_secs_f64(opts.concurrency as f64 / r)),
            first: now,
        }
    }

    /// Worker `i` of `n`: open-loop schedules are spread evenly over one interval.
    pub(crate) fn for_worker(mut self, i: usize, n: usize) -> Self {
        if let Some(iv) = self.interval {
            self.first += iv.mul_f64(i as f64 / n as f64);
        }
        self
    }

    /// When the next request starts. Open loop: if the worker is behind schedule (an
    /// earlier answer was late), the scheduled time, so latency counts the wait behind
    /// slow answers too (no coordinated omission); if it is early, it sleeps and the
    /// request starts when it is actually sent (tokio's timer fires up to 1 ms late,
    /// which is not the server's doing).
    pub(crate) async fn next_start(&mut self) -> Instant {
        match self.interval {
            None => Instant::now(),
            Some(iv) => {
                let at = self.first;
                self.first += iv;
                if Instant::now() >= at {
                    return at;
                }
                tokio::time::sleep_until(at.into()).await;
                Instant::now()
            }
        }
    }
}

pub(crate) struct Tally {
    pub(crate) hist: Histogram<u64>,
    pub(crate) ok: u64,
    pub(crate) denied: u64,
    pub(crate) other: u64,
    pub(crate) errors: u64,
    /// Answers given by `--on-store-error` instead of Redis (a `fallback` field): 200 or
    /// 429 without any counting, so they are reported apart and never as allowed checks.
    pub(crate) fallback: u64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally {
            // Nanoseconds, 1 ns .. 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
            ok: 0,
            denied: 0,
            other: 0,
            errors: 0,
            fallback: 0,
        }
    }

    pub(crate) fn merge(&mut self, o: &Tally) {
        self.hist.add(&o.hist).unwrap();
        self.ok += o.ok;
        self.denied += o.denied;
        self.other += o.other;
        self.fallback += o.fallback;
        self.errors += o.errors;
    }

    pub(crate) fn record(&mut self, started: Instant, w: &Window) -> bool {
        if started < w.measure_from {
            return false;
        }
        let ns = started.elapsed().as_nanos() as u64;
        self.hist.saturating_record(ns.max(1));
        true
    }
}

/// `limits`: how many limits every answer must list; an answer with another number (a
/// config missing from tollgate's snapshot) is counted as `other`, never as allowed.
pub(crate) async fn http_worker(addr: SocketAddr, limits: usize, mut w: Window) -> Tally {
    let mut t = Tally::new();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let host = addr.to_string();
    let body = Bytes::from_static(CHECK_BODY.as_bytes());
    loop {
        let started = w.next_start().await;
        if started >= w.end {
            break;
        }
        if sender.ready().await.is_err() {
            t.errors += 1;
            break;
        }
        let req = Request::post("/v1/check")
            .header(HOST, &host)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let status = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.into_body().collect().await {
                    Ok(b) => {
                        let b = b.to_bytes();
                        let fallback = b.windows(10).any(|w| w == b"\"fallback\"");
                        let listed = b.windows(11).filter(|w| w == b"\"config_id\"").count();
                        Some(if fallback {
                            0
                        } else if listed != limits {
                            1
                        } else {
                            status
                        })
                    }
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        if t.record(started, &w) {
            match status {
                Some(0) => t.fallback += 1,
                Some(200) => t.ok += 1,
                Some(429) => t.denied += 1,
                Some(_) => t.other += 1,
                None => t.errors += 1,
            }
        }
        if status.is_none() {
            break;
        }
    }
    t
}

/// How a direct worker reaches Redis: the multiplexed connection shared by all workers
/// (as tollgate does), or a connection of its own.
pub(crate) enum Conn {
    Shared(redis::aio::ConnectionManager),
    Own(Box<redis::Client>),
}

pub(crate) async fn script_worker(
    conn: Conn,
    script: Arc<redis::Script>,
    call: Arc<(Vec<String>, Vec<Vec<u8>>)>,
    w: Window,
) -> Tally {
    match conn {
        Conn::Shared(c) => script_loop(c, script, call, w).await,
        Conn::Own(client) => {
            let c = client.get_multiplexed_async_connection().await.unwrap();
            script_loop(c, script, call, w).await
        }
    }
}

pub(crate) async fn script_loop<C: redis::aio::ConnectionLike + Send>(
    mut conn: C,
    script: Arc<redis::Script>,
    call: Arc<(Vec<String>, Vec<Vec<u8>>)>,
    mut w: Window,
) -> Tally {
    let mut t = Tally::new();
    loop {
        let started = w.next_start().await;
        if started >= w.end {
            break;
        }
        let mut inv = script.prepare_invoke();
        for k in &call.0 {
            inv.key(k);
        }
        for a in &call.1 {
            inv.arg(a);
        }
        let reply: redis::RedisResult<Vec<i64>> = inv.invoke_async(&mut conn).await;
        if t.record(started, &w) {
            // `batch.lua`: {now, status of the one op, …}.
            match reply.as_deref() {
                Ok([_, 1, ..]) => t.ok += 1,
                Ok([_, 0, ..]) => t.denied += 1,
                Ok(_) => t.other += 1,
                Err(_) => t.errors += 1,
            }
        }
    }
    t
}
