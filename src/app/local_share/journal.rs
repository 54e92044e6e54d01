//! What this replica admitted on its own while the store did not answer: each check an
//! entry (its configs, amounts, and when), kept until the store has been charged with it,
//! bounded. The sums per config and kind are what the replica already took of its share.

use crate::limits::LimitKind;
use crate::store::Amounts;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

/// One check admitted locally. `id` (the replica's id and a sequence number) is the
/// replay's idempotency id: the store applies it once, however often it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// When it was admitted (this replica's clock, Unix ms).
    pub at_ms: i64,
    /// Every config it was charged to (shadow ones too, as the store would have).
    pub configs: Vec<String>,
    /// Requests, tokens, nano-dollars.
    pub amounts: [i64; 3],
    /// The store has it. Kept (its amounts still count against this replica's share)
    /// until the other replicas have had time to charge theirs too.
    #[serde(default)]
    pub charged: bool,
}

impl Entry {
    pub fn amounts(&self) -> Amounts {
        let [requests, tokens, cost_nanos] = self.amounts;
        Amounts {
            requests,
            tokens,
            cost_nanos,
        }
    }
}

fn kind_index(kind: LimitKind) -> usize {
    match kind {
        LimitKind::Requests => 0,
        LimitKind::Tokens => 1,
        LimitKind::Budget => 2,
    }
}

/// The entries not yet charged, oldest first, and their sums.
#[derive(Debug, Default)]
pub struct Journal {
    entries: VecDeque<Entry>,
    /// Per config id: requests, tokens and nano-dollars of its entries.
    taken: HashMap<String, [i64; 3]>,
}

impl Journal {
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut j = Journal::default();
        for e in entries {
            j.push(e);
        }
        j
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What this replica admitted on its own of config `id`'s limits of `kind`.
    pub fn taken(&self, id: &str, kind: LimitKind) -> i64 {
        self.taken.get(id).map_or(0, |t| t[kind_index(kind)])
    }

    pub fn push(&mut self, entry: Entry) {
        for id in &entry.configs {
            let t = self.taken.entry(id.clone()).or_default();
            for (sum, a) in t.iter_mut().zip(entry.amounts) {
                *sum = sum.saturating_add(a);
            }
        }
        self.entries.push_back(entry);
    }

    /// The oldest `n` entries not yet charged to the store.
    pub fn oldest(&self, n: usize) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| !e.charged)
            .take(n)
            .cloned()
            .collect()
    }

    /// Entries not yet charged to the store.
    pub fn uncharged(&self) -> usize {
        self.entries.iter().filter(|e| !e.charged).count()
    }

    /// The store has the entries of `ids`.
    pub fn mark_charged(&mut self, ids: &HashSet<&str>) {
        for e in self.entries.iter_mut() {
            if ids.contains(e.id.as_str()) {
                e.charged = true;
            }
        }
    }

    /// Drops the charged entries (and their sums), and returns them.
    pub fn drop_charged(&mut self) -> Vec<Entry> {
        let charged: Vec<Entry> = self.entries.iter().filter(|e| e.charged).cloned().collect();
        let ids: HashSet<&str> = charged.iter().map(|e| e.id.as_str()).collect();
        self.remove(&ids);
        charged
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Drops the entries of `ids`, and their sums.
    fn remove(&mut self, ids: &HashSet<&str>) {
        let taken = &mut self.taken;
        self.entries.retain(|e| {
            if !ids.contains(e.id.as_str()) {
                return true;
            }
            for id in &e.configs {
                if let Some(t) = taken.get_mut(id) {
                    for (sum, a) in t.iter_mut().zip(e.amounts) {
                        *sum -= a;
                    }
                    if t.iter().all(|&s| s == 0) {
                        taken.remove(id);
                    }
                }
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, configs: &[&str], amounts: [i64; 3]) -> Entry {
        Entry {
            id: id.into(),
            at_ms: 1,
            configs: configs.iter().map(|c| c.to_string()).collect(),
            amounts,
            charged: false,
        }
    }

    #[test]
    fn sums_follow_pushes_and_removals() {
        let mut j = Journal::default();
        j.push(entry("a", &["c1", "c2"], [1, 10, 0]));
        j.push(entry("b", &["c1"], [1, 5, 7]));
        assert_eq!(j.taken("c1", LimitKind::Requests), 2);
        assert_eq!(j.taken("c1", LimitKind::Tokens), 15);
        assert_eq!(j.taken("c2", LimitKind::Tokens), 10);
        assert_eq!(j.taken("c1", LimitKind::Budget), 7);
        assert_eq!(j.taken("c3", LimitKind::Requests), 0);
        j.mark_charged(&HashSet::from(["a"]));
        assert_eq!((j.len(), j.uncharged()), (2, 1));
        assert_eq!(
            j.taken("c1", LimitKind::Requests),
            2,
            "charged still counts"
        );
        assert_eq!(j.oldest(5), vec![entry("b", &["c1"], [1, 5, 7])]);
        assert_eq!(j.drop_charged().len(), 1);
        assert_eq!(j.len(), 1);
        assert_eq!(j.taken("c1", LimitKind::Requests), 1);
        assert_eq!(j.taken("c2", LimitKind::Tokens), 0);
        let again = Journal::from_entries(j.entries().cloned());
        assert_eq!(again.taken("c1", LimitKind::Budget), 7);
    }
}
