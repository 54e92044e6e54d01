use super::*;
use crate::limits::CompiledConfig;

/// A config with one request limit of `max` an hour, named `id`.
pub(crate) fn config(id: &str, max: u64) -> Arc<CompiledConfig> {
    let mut c = crate::model::validate::create_config(
        serde_json::from_value(serde_json::json!({
            "model_name": "m",
            "rate_limit": {"request_max_limit": max, "request_reset_duration": "1h"}
        }))
        .expect("a request"),
        chrono::Utc::now(),
    )
    .expect("a config");
    c.id = id.into();
    Arc::new(CompiledConfig::compile(c).expect("compiles"))
}

fn one() -> Amounts {
    Amounts {
        requests: 1,
        ..Amounts::default()
    }
}

#[test]
fn a_replica_admits_its_share_of_what_was_left_and_no_more() {
    let local = LocalShare::new(1000, 0);
    let c = config("a", 300);
    c.seen().record(0, 100, 1);
    let configs = [c.clone()];
    assert_eq!(
        local.decide(&configs, one(), false),
        Verdict::NoReplicaCount
    );
    local.set_replicas(3);
    let admitted = (0..100)
        .filter(|_| local.decide(&configs, one(), false) == Verdict::Admitted)
        .count();
    assert_eq!(admitted, 66, "(300 - 100) / 3");
    assert_eq!(local.held(), 66);
    assert_eq!(
        local.decide(&configs, one(), true),
        Verdict::Refused(LimitKind::Requests)
    );
}

#[test]
fn all_or_nothing_across_configs_and_bounded() {
    let local = LocalShare::new(3, 0);
    local.set_replicas(1);
    let (roomy, tight) = (config("roomy", 100), config("tight", 2));
    let both = [roomy.clone(), tight.clone()];
    assert_eq!(local.decide(&both, one(), false), Verdict::Admitted);
    assert_eq!(local.decide(&both, one(), false), Verdict::Admitted);
    assert_eq!(
        local.decide(&both, one(), false),
        Verdict::Refused(LimitKind::Requests)
    );
    assert_eq!(local.held(), 2, "a refused check journals nothing");
    let alone = [roomy];
    assert_eq!(local.decide(&alone, one(), false), Verdict::Admitted);
    assert_eq!(local.decide(&alone, one(), false), Verdict::JournalFull);
    assert_eq!(
        local
            .state
            .lock()
            .journal
            .taken("roomy", LimitKind::Requests),
        3
    );
}
