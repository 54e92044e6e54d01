//! How ops name and declare their usage markers' hashes.

use super::*;

#[test]
fn markers_of_two_identities_with_one_request_id_differ() {
    let now = 1_795_000_000_000;
    let a = Marker::of("m|p|vk-1|u|req-1", now);
    let b = Marker::of("m|p|vk-2|u|req-1", now);
    assert_ne!(a, b);
    assert_eq!(a, Marker::of("m|p|vk-1|u|req-1", now));
    assert!(a.bucket < 8192 && a.field < 128);
    assert_eq!(a.day, now / MARKER_DAY_MS);
}

fn report(keys: &[&str], request_id: &str) -> Op {
    Op {
        kind: OpKind::Usage,
        deadline: 0,
        amounts: [0, 5, 0],
        reserved_at: 0,
        configs: keys
            .iter()
            .map(|k| ConfigRef {
                key: k.to_string(),
                limits: Arc::from(&b""[..]),
                n_limits: 0,
            })
            .collect(),
        marker: Some(Marker::of(request_id, 3 * MARKER_DAY_MS + 5)),
        lease: None,
    }
}

#[test]
fn marker_hashes_are_declared_after_the_counters() {
    let ops = [report(&["p:c:a", "p:c:b"], "r1"), report(&["p:c:b"], "r2")];
    let (keys, args) = batch_parts("p:u:", &ops);
    assert_eq!(&keys[..2], ["p:c:a", "p:c:b"]);
    assert_eq!(args[0], b"2", "ARGV[1] counts the counters keys");
    let m = ops[0].marker.unwrap();
    for day in [2, 3, 4] {
        let key = format!("p:u:{day}:{}", m.bucket);
        assert!(keys.contains(&key), "{key} declared in {keys:?}");
    }
    assert!(keys.len() <= 2 + 6);
}

#[test]
fn cluster_marker_hashes_sit_in_the_slot_of_the_first_counters() {
    let ops = [report(&["p:c:{a}", "p:c:{b}"], "r1")];
    let (keys, _) = batch_parts("", &ops);
    let m = ops[0].marker.unwrap();
    assert_eq!(keys.len(), 5);
    for key in &keys[2..] {
        assert!(key.starts_with("p:c:{a}:u:"), "{key}");
    }
    assert!(keys.contains(&format!("p:c:{{a}}:u:3:{}", m.bucket)));
}
