//! A config's counters by limit field (`requests`, `tokens`, `b:<budget id>`), as Redis
//! keeps them in one hash per config. A config has a handful of limits, so a short list
//! searched in order beats a hash map: no hashing, and a miss on a name of another
//! length costs one comparison of lengths. A check opens every field of every matching
//! config, two or three times each.

/// Values by field name, in the order the fields were first used.
#[derive(Debug)]
pub(super) struct Fields<V> {
    entries: Vec<(Box<str>, V)>,
}

impl<V> Default for Fields<V> {
    fn default() -> Self {
        Fields {
            entries: Vec::new(),
        }
    }
}

impl<V> Fields<V> {
    fn position(&self, field: &str) -> Option<usize> {
        self.entries.iter().position(|(f, _)| **f == *field)
    }

    pub(super) fn get(&self, field: &str) -> Option<&V> {
        self.position(field).map(|i| &self.entries[i].1)
    }

    /// `field`'s value, created on first use: the name is copied then, not per check.
    pub(super) fn slot(&mut self, field: &str) -> &mut V
    where
        V: Default,
    {
        let i = self.position(field).unwrap_or_else(|| {
            self.entries.push((field.into(), V::default()));
            self.entries.len() - 1
        });
        &mut self.entries[i].1
    }

    pub(super) fn remove(&mut self, field: &str) -> Option<V> {
        self.position(field).map(|i| self.entries.swap_remove(i).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Step {
        Add(u8, i64),
        Remove(u8),
    }

    fn name(n: u8) -> String {
        // Names of equal and of different lengths, as real fields are.
        ["requests", "tokens", "b:a", "b:b", "b:ab"][n as usize % 5].to_string()
    }

    proptest! {
        /// The same answers as a hash map after any sequence of writes and removals.
        #[test]
        fn holds_what_a_map_holds(steps in prop::collection::vec(
            prop_oneof![
                (any::<u8>(), -5i64..5).prop_map(|(n, v)| Step::Add(n, v)),
                any::<u8>().prop_map(Step::Remove),
            ],
            0..40,
        )) {
            let mut fields: Fields<i64> = Fields::default();
            let mut map: HashMap<String, i64> = HashMap::new();
            for step in steps {
                match step {
                    Step::Add(n, v) => {
                        *fields.slot(&name(n)) += v;
                        *map.entry(name(n)).or_default() += v;
                    }
                    Step::Remove(n) => {
                        prop_assert_eq!(fields.remove(&name(n)), map.remove(&name(n)));
                    }
                }
            }
            for n in 0..5 {
                prop_assert_eq!(fields.get(&name(n)), map.get(&name(n)));
            }
        }
    }
}
