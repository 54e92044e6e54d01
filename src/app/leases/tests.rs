use super::*;
use crate::app::local_share::tests::config;
use crate::store::LimitGrant;

fn one() -> Amounts {
    Amounts {
        requests: 1,
        ..Amounts::default()
    }
}

fn allowed(n: usize) -> CheckOutcome {
    CheckOutcome {
        allowed: true,
        limits: vec![
            LimitOutcome {
                admitted: true,
                used: 50,
                reset_after_ms: 1000,
                retry_after_ms: 0,
            };
            n
        ],
        now_ms: 1,
        crossings: Vec::new(),
    }
}

/// A grant of `added` (the check's 1 and the lease) on every limit, for `life_ms`.
fn granted(n: usize, added: i64, life_ms: i64) -> Granted {
    Granted {
        per_limit: vec![
            LimitGrant {
                added,
                until_ms: 1 + life_ms,
                life_ms,
            };
            n
        ],
    }
}

#[test]
fn a_cold_config_is_never_leased() {
    let leases = Leases::new(500, 20);
    let configs = [config("a", 1000)];
    for _ in 0..10 {
        assert!(leases.answer(&configs, one()).is_none());
    }
    assert!(
        leases.ask(&configs, one(), 2).is_none(),
        "10 checks, not 20 a second"
    );
}

#[test]
fn checks_spend_a_lease_and_stop_where_it_ends() {
    let leases = Leases::new(500, 1);
    let (a, b) = (config("a", 1000), config("b", 1000));
    let both = [a.clone(), b.clone()];
    assert!(leases.answer(&both, one()).is_none());
    // The rate of a full second is needed before asking.
    leases.state.lock().followed.values_mut().for_each(|f| {
        f.second -= Duration::from_millis(1500);
    });
    assert!(leases.answer(&both, one()).is_none());
    assert!(
        leases.ask(&both, one(), 0).is_none(),
        "replicas never counted"
    );
    let ask = leases.ask(&both, one(), 2).expect("hot configs ask");
    assert_eq!(
        ask.per_limit,
        vec![[1, 0], [1, 0]],
        "one check a second over 0.5 s"
    );
    // The store granted 5 on each (6 added with the check's 1).
    leases.take(
        &both,
        one(),
        Instant::now(),
        &allowed(2),
        &granted(2, 6, 500),
    );
    for _ in 0..5 {
        let o = leases.answer(&both, one()).expect("answered here");
        assert!(o.allowed);
        assert_eq!(o.now_ms, 501, "a report settles at the lease's end");
    }
    assert!(leases.answer(&both, one()).is_none(), "5 leased, 5 spent");
    assert!(
        leases.due(Instant::now(), true).is_empty(),
        "nothing left to give back"
    );
}

#[test]
fn a_check_is_answered_here_only_when_every_limit_has_room() {
    let leases = Leases::new(500, 1);
    let (a, b) = (config("a", 1000), config("b", 1000));
    let both = [a.clone(), b.clone()];
    leases.answer(&both, one());
    leases.take(
        &both,
        one(),
        Instant::now(),
        &allowed(2),
        &granted(2, 3, 500),
    );
    // `a` alone gets leased more, `b` keeps 2.
    leases.take(
        std::slice::from_ref(&a),
        one(),
        Instant::now(),
        &allowed(1),
        &granted(1, 11, 500),
    );
    assert!(leases.answer(&both, one()).is_some());
    assert!(leases.answer(&both, one()).is_some());
    assert!(leases.answer(&both, one()).is_none(), "b has none left");
    let due = leases.due(Instant::now(), true);
    let left: i64 = due
        .iter()
        .filter(|d| d.config.config.id == "a")
        .map(|d| d.left)
        .sum();
    assert_eq!(
        left,
        2 + 10 - 2,
        "a's leases less the two checks, nothing taken by the third"
    );
}

#[test]
fn ended_leases_are_given_back_and_a_new_revision_retires_them() {
    let leases = Leases::new(500, 1);
    let a = config("a", 1000);
    leases.answer(std::slice::from_ref(&a), one());
    leases.take(
        std::slice::from_ref(&a),
        one(),
        Instant::now(),
        &allowed(1),
        &granted(1, 8, 20),
    );
    assert!(leases.due(Instant::now(), false).is_empty(), "still live");
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        leases.answer(std::slice::from_ref(&a), one()).is_none(),
        "ended: not spent"
    );
    let due = leases.due(Instant::now(), false);
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].left, due[0].until_ms), (7, 21));

    leases.take(
        std::slice::from_ref(&a),
        one(),
        Instant::now(),
        &allowed(1),
        &granted(1, 4, 500),
    );
    let mut changed = (*a).clone();
    changed.config.revision += 1;
    let changed = Arc::new(changed);
    assert!(
        leases.answer(&[changed], one()).is_none(),
        "a new revision has no lease"
    );
    let due = leases.due(Instant::now(), false);
    assert_eq!(
        due.iter().map(|d| d.left).sum::<i64>(),
        3,
        "the old revision's lease goes back"
    );
}
