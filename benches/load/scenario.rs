//! One scenario, end to end: its Redis and tollgates, its configs, the prefill, the
//! measured phases over HTTP and straight to Redis, and its row of the tables.

use super::*;

pub(crate) async fn run_scenario(opts: &Opts, scenario: char) -> Row {
    let title = match scenario {
        'a' => "(a) 1 matching config".to_string(),
        'b' => "(b) 3 matching configs".to_string(),
        'c' => format!("(c) {} configs, 3 matching", opts.filler_configs),
        'd' => "(d) 2 tollgates, 3 matching".to_string(),
        _ => format!(
            "(e) fleet: {} tollgates × {} conns, 3 matching",
            opts.fleet,
            opts.concurrency.div_ceil(opts.fleet)
        ),
    };
    println!("\n## {title}");
    let redis = RedisServer::start_with(&opts.redis_bin, &redis_args(&opts.redis_args));
    let url = redis.url();
    let bodies = matching_bodies(scenario);
    if scenario == 'c' {
        let n = opts.filler_configs - bodies.len();
        let t = Instant::now();
        seed_fillers(&url, n).await;
        println!(
            "  seeded {n} non-matching configs in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let instances = match scenario {
        'd' => 2,
        'e' => opts.fleet,
        _ => 1,
    };
    let mut tollgates = Vec::new();
    for _ in 0..instances {
        tollgates.push(start_tollgate(opts, &url).await);
    }
    let mut create_ms = Vec::new();
    for b in &bodies {
        create_ms.push(create_via_api(tollgates[0].addr, b).await.as_secs_f64() * 1e3);
    }
    let total = if scenario == 'c' {
        opts.filler_configs
    } else {
        bodies.len()
    } as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    for tg in &tollgates {
        while ready_configs(tg.addr).await != total {
            assert!(Instant::now() < deadline, "configs did not reach tollgate");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "  {total} configs loaded; management API create took {} ms each",
        create_ms
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    // One real check: allowed, with 3 limits per matching config.
    let probe: Value = reqwest::Client::new()
        .post(format!("http://{}/v1/check", tollgates[0].addr))
        .header("content-type", "application/json")
        .body(CHECK_BODY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limits = probe["limits"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(probe["allowed"], json!(true), "probe check: {probe}");
    assert_eq!(limits, 3 * bodies.len(), "probe check: {probe}");

    let me = std::process::id().to_string();
    let mut procs = vec![(
        "redis".to_string(),
        redis.pid().expect("redis-server runs").to_string(),
    )];
    for (i, tg) in tollgates.iter().enumerate() {
        let name = if instances > 1 {
            format!("tollgate{}", i + 1)
        } else {
            "tollgate".into()
        };
        procs.push((name, tg.proc.pid().to_string()));
    }
    procs.push(("load generator".into(), me.clone()));

    // The script call a check makes, as tollgate builds it.
    let (keys, args, n_limits) = script_call(&url).await;
    assert_eq!(
        n_limits, limits,
        "direct call must evaluate the same limits"
    );
    let call = Arc::new((keys, args));
    let script = Arc::new(redis::Script::new(scripts::BATCH));
    let client = redis::Client::open(url.as_str()).unwrap();
    let shared = client.get_connection_manager().await.unwrap();

    // Steady state first: a sliding window's hash grows by one sub-bucket every
    // window/30 until it holds a whole window, and the script's cost grows with it.
    // Filling the windows before measuring keeps every phase on the same footing.
    if !opts.prefill.is_zero() {
        println!(
            "  prefilling the windows for {:.0} s with direct script calls:",
            opts.prefill.as_secs_f64()
        );
        let deadline = Instant::now() + opts.prefill;
        let mut line = Vec::new();
        while Instant::now() < deadline {
            let now = Instant::now();
            let w = Window {
                measure_from: now,
                end: (now + Duration::from_secs(10)).min(deadline),
                interval: None,
                first: now,
            };
            let workers = (0..opts.concurrency)
                .map(|_| {
                    tokio::spawn(script_worker(
                        Conn::Shared(shared.clone()),
                        script.clone(),
                        call.clone(),
                        w,
                    ))
                })
                .collect();
            let m = measure(w, vec![procs[0].clone()], None, workers).await;
            line.push(format!(
                "{:.0}/s ({:.0} µs redis CPU/call)",
                m.rate(),
                m.cpu[0].1 * 1e6 / m.rate().max(1e-9)
            ));
        }
        println!("    {}", line.join(" → "));
    }
    let mut sync = client.get_connection().unwrap();
    let hashes: Vec<String> = call
        .0
        .iter()
        .map(|k| {
            let len: u64 = redis::cmd("HLEN").arg(k).query(&mut sync).unwrap_or(0);
            let enc: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(k)
                .query(&mut sync)
                .unwrap_or_default();
            format!("{len} fields ({enc})")
        })
        .collect();
    println!("  counter hashes: {}", hashes.join(", "));

    // 1. tollgate over HTTP.
    let perf = opts.perf_dir.as_ref().map(|dir| {
        std::fs::create_dir_all(dir).unwrap();
        (
            dir.join(format!("scenario-{scenario}.perf.data")),
            tollgates.iter().map(|t| t.proc.pid()).collect::<Vec<u32>>(),
        )
    });
    let addrs: Vec<SocketAddr> = tollgates.iter().map(|t| t.addr).collect();
    let mut batches_before = (0.0, 0.0);
    for a in &addrs {
        let (c, o) = batch_counts(*a).await;
        batches_before = (batches_before.0 + c, batches_before.1 + o);
    }
    let tollgate = phase(
        opts,
        &format!("tollgate, {} HTTP conns", opts.concurrency),
        &procs,
        perf,
        |w| {
            (0..opts.concurrency)
                .map(|i| {
                    tokio::spawn(http_worker(
                        addrs[i % addrs.len()],
                        limits,
                        w.for_worker(i, opts.concurrency),
                    ))
                })
                .collect()
        },
    )
    .await;

    let mut batches_after = (0.0, 0.0);
    for a in &addrs {
        let (c, o) = batch_counts(*a).await;
        batches_after = (batches_after.0 + c, batches_after.1 + o);
    }
    // Over warm-up and measured phase (the counters are cumulative).
    let batch =
        (batches_after.1 - batches_before.1) / (batches_after.0 - batches_before.0).max(1.0);
    println!("  mean batch: {batch:.2} ops per script call");
    if opts.lease_ms.is_some() {
        let mut sum = [0.0; 3];
        for a in &addrs {
            for (s, v) in sum.iter_mut().zip(lease_counts(*a).await) {
                *s += v;
            }
        }
        println!(
            "  leases: {:.1} % of checks answered locally ({:.0} local, {:.0} by Redis); {:.0} requests held leased now, fleet-wide",
            100.0 * sum[0] / (sum[0] + sum[1]).max(1.0),
            sum[0],
            sum[1],
            sum[2]
        );
    }

    if tollgate.tally.fallback > 0 {
        for tg in &tollgates {
            let log = std::fs::read_to_string(&tg.proc.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            println!(
                "  WARNING: tollgate answered by --on-store-error; its log ends with:\n    {}",
                tail.join("\n    ")
            );
        }
    }

    // 2. The same script call straight to Redis.
    let direct_procs = vec![procs[0].clone(), ("load generator".into(), me)];
    // One script worker per connection slot; `conn(i)` gives worker i its connection.
    let script_workers = |w: Window, script: &Arc<redis::Script>, conn: &dyn Fn() -> Conn| {
        (0..opts.concurrency)
            .map(|i| {
                tokio::spawn(script_worker(
                    conn(),
                    script.clone(),
                    call.clone(),
                    w.for_worker(i, opts.concurrency),
                ))
            })
            .collect()
    };
    let shared_conn = || Conn::Shared(shared.clone());
    let own_conn = || Conn::Own(Box::new(client.clone()));
    let direct_shared = phase(
        opts,
        "direct, 1 multiplexed conn",
        &direct_procs,
        None,
        |w| script_workers(w, &script, &shared_conn),
    )
    .await;
    let direct_per_conn = phase(
        opts,
        &format!("direct, {} conns", opts.concurrency),
        &direct_procs,
        None,
        |w| script_workers(w, &script, &own_conn),
    )
    .await;
    if let Some(path) = &opts.alt_script {
        let source = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let alt = Arc::new(redis::Script::new(&source));
        for (label, s) in [
            ("direct, built-in script, 1 mux", &script),
            ("direct, alt script, 1 mux", &alt),
            ("direct, built-in script, 1 mux", &script),
            ("direct, alt script, 1 mux", &alt),
        ] {
            phase(opts, label, &direct_procs, None, |w| {
                script_workers(w, s, &shared_conn)
            })
            .await;
        }
    }
    drop(tollgates);
    let reference = tokio::task::block_in_place(|| reference_phase(opts, &redis));
    drop(redis);
    Row {
        scenario: title,
        tollgate,
        direct_shared,
        direct_per_conn,
        batch,
        reference,
    }
}
