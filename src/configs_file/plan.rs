//! The plan: what makes the configs a store holds match a file. Pure (desired and
//! current in, steps out), shared by `tollgate configs apply` and the server's watched
//! file.

use super::format::Desired;
use super::spec::{label, same_spec};
use crate::model::ModelConfig;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Delete,
    /// A config this file managed and no longer names, without prune: it stays, and the
    /// management API may write it again (the server's watched file only).
    Release,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Unchanged => "unchanged",
            Action::Delete => "delete",
            Action::Release => "release",
        }
    }
}

/// One config's step: `desired` for create, update and unchanged; `current` for all but
/// create.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub action: Action,
    pub desired: Option<&'a Desired>,
    pub current: Option<&'a ModelConfig>,
}

impl Step<'_> {
    /// The config's identity for people (`virtual_key vk-1 openai/gpt-4o`).
    pub fn label(&self) -> String {
        match (self.desired, self.current) {
            (Some(d), _) => label(&d.config),
            (None, Some(c)) => label(c),
            (None, None) => String::new(),
        }
    }

    /// The plan's line for this step: `update   virtual_key vk-1 gpt-4o`.
    pub fn line(&self) -> String {
        format!("{:<9} {}", self.action.as_str(), self.label())
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// Delete the configs the file does not name.
    pub prune: bool,
    /// The watched file's marker (its path): configs it makes carry it, and a config
    /// without any marker is updated to carry it. `None` for `apply`.
    pub marker: Option<&'a str>,
}

/// One step per desired config (in file order), then the deletes (prune) or releases of
/// the current configs the file does not name (in `current`'s order).
pub fn plan<'a>(
    desired: &'a [Desired],
    current: &[&'a ModelConfig],
    options: Options<'_>,
) -> Vec<Step<'a>> {
    let mut by_identity: HashMap<String, &'a ModelConfig> = HashMap::new();
    for c in current {
        by_identity.entry(c.identity()).or_insert(c);
    }
    let mut steps: Vec<Step<'a>> = desired
        .iter()
        .map(|d| {
            let found = by_identity.get(&d.identity()).copied();
            let action = match found {
                None => Action::Create,
                Some(c)
                    if same_spec(&d.config, c)
                        && (options.marker.is_none() || c.managed_by.is_some()) =>
                {
                    Action::Unchanged
                }
                Some(_) => Action::Update,
            };
            Step {
                action,
                desired: Some(d),
                current: found,
            }
        })
        .collect();
    let named: HashSet<String> = desired.iter().map(Desired::identity).collect();
    let mut done: HashSet<&str> = HashSet::new();
    for c in current {
        if named.contains(&c.identity()) || !done.insert(c.id.as_str()) {
            continue;
        }
        let action = if options.prune {
            Action::Delete
        } else if options.marker.is_some() && c.managed_by.as_deref() == options.marker {
            Action::Release
        } else {
            continue;
        };
        steps.push(Step {
            action,
            desired: None,
            current: Some(c),
        });
    }
    steps
}

/// How many steps of each action, for summaries.
pub fn count(steps: &[Step<'_>], action: Action) -> usize {
    steps.iter().filter(|s| s.action == action).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configs_file::spec::{carry_over, fresh};
    use crate::model::validate::create_config;
    use chrono::Utc;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn desired(index: usize, body: Value) -> Desired {
        let config =
            create_config(serde_json::from_value(body.clone()).unwrap(), Utc::now()).unwrap();
        Desired {
            index,
            config,
            body,
        }
    }

    fn body(model: u8, scope_id: Option<u8>, requests: u64) -> Value {
        let mut b = json!({"model_name": format!("m{model}"),
            "rate_limit": {"request_max_limit": requests, "request_reset_duration": "1m"}});
        if let Some(id) = scope_id {
            b["scope"] = json!("user");
            b["scope_id"] = json!(format!("u{id}"));
        }
        b
    }

    /// What executing `steps` does to `current` (the reconcile and `apply` make these
    /// writes, minus the races).
    fn execute(
        steps: &[Step<'_>],
        current: &[ModelConfig],
        marker: Option<&str>,
    ) -> Vec<ModelConfig> {
        let now = Utc::now();
        let mut out: Vec<ModelConfig> = current.to_vec();
        for s in steps {
            match s.action {
                Action::Create => out.push(fresh(&s.desired.unwrap().config, now, marker)),
                Action::Update => {
                    let c = s.current.unwrap();
                    let next = carry_over(c, &s.desired.unwrap().config, now, marker);
                    *out.iter_mut().find(|o| o.id == c.id).unwrap() = next;
                }
                Action::Delete => out.retain(|o| o.id != s.current.unwrap().id),
                Action::Release => {
                    let o = out
                        .iter_mut()
                        .find(|o| o.id == s.current.unwrap().id)
                        .unwrap();
                    o.managed_by = None;
                }
                Action::Unchanged => {}
            }
        }
        out
    }

    #[test]
    fn creates_updates_and_leaves_alone() {
        let current: Vec<ModelConfig> = [body(1, None, 5), body(2, None, 5), body(3, Some(1), 5)]
            .into_iter()
            .enumerate()
            .map(|(i, b)| desired(i, b).config)
            .collect();
        let refs: Vec<&ModelConfig> = current.iter().collect();
        let file = vec![
            desired(0, body(1, None, 5)),
            desired(1, body(2, None, 6)),
            desired(2, body(4, None, 5)),
        ];
        let steps = plan(&file, &refs, Options::default());
        let actions: Vec<Action> = steps.iter().map(|s| s.action).collect();
        assert_eq!(actions, [Action::Unchanged, Action::Update, Action::Create]);
        assert_eq!(
            steps[1].current.unwrap().id,
            current[1].id,
            "updated in place"
        );
        assert_eq!(steps[1].line(), "update    global m2");
        let pruned = plan(
            &file,
            &refs,
            Options {
                prune: true,
                marker: None,
            },
        );
        assert_eq!(pruned.len(), 4);
        assert_eq!(pruned[3].action, Action::Delete);
        assert_eq!(pruned[3].label(), "user u1 m3");
    }

    #[test]
    fn the_watched_file_marks_adopts_and_releases() {
        let mut adopted = desired(0, body(1, None, 5)).config;
        let mut ours = desired(1, body(2, None, 5)).config;
        ours.managed_by = Some("f".into());
        let mut theirs = desired(2, body(3, None, 5)).config;
        theirs.managed_by = Some("other".into());
        let refs = [&adopted, &ours, &theirs];
        let file = vec![desired(0, body(1, None, 5))];
        let opts = Options {
            prune: false,
            marker: Some("f"),
        };
        let steps = plan(&file, &refs, opts);
        let actions: Vec<Action> = steps.iter().map(|s| s.action).collect();
        assert_eq!(
            actions,
            [Action::Update, Action::Release],
            "unmarked: adopted; ours: released"
        );
        adopted.managed_by = Some("other path".into());
        let refs = [&adopted, &ours];
        assert_eq!(
            plan(&file, &refs, opts)[0].action,
            Action::Unchanged,
            "any marker will do"
        );
    }

    proptest! {
        /// Whatever the file and the store hold: the plan names every file config once,
        /// deletes only with prune, never touches a config twice, and once executed the
        /// next plan is all unchanged.
        #[test]
        fn plans_converge_in_one_step(
            file in proptest::collection::vec((0u8..6, proptest::option::of(0u8..3), 1u64..4), 0..8),
            store in proptest::collection::vec((0u8..6, proptest::option::of(0u8..3), 1u64..4, any::<bool>()), 0..8),
            prune in any::<bool>(),
            watched in any::<bool>(),
        ) {
            let mut seen = HashSet::new();
            let file: Vec<Desired> = file.into_iter()
                .filter(|(m, s, _)| seen.insert((*m, *s)))
                .enumerate()
                .map(|(i, (m, s, r))| desired(i, body(m, s, r)))
                .collect();
            let marker = watched.then_some("f");
            let mut seen = HashSet::new();
            let current: Vec<ModelConfig> = store.into_iter()
                .filter(|(m, s, ..)| seen.insert((*m, *s)))
                .map(|(m, s, r, marked)| {
                    let mut c = desired(0, body(m, s, r)).config;
                    c.managed_by = marked.then(|| "f".into());
                    c
                })
                .collect();
            let refs: Vec<&ModelConfig> = current.iter().collect();
            let opts = Options { prune, marker };
            let steps = plan(&file, &refs, opts);
            prop_assert_eq!(steps.iter().filter(|s| s.desired.is_some()).count(), file.len());
            prop_assert!(prune || count(&steps, Action::Delete) == 0);
            let touched: Vec<&str> = steps.iter().filter_map(|s| s.current.map(|c| c.id.as_str())).collect();
            prop_assert_eq!(touched.len(), touched.iter().collect::<HashSet<_>>().len());
            let after = execute(&steps, &current, marker);
            let refs: Vec<&ModelConfig> = after.iter().collect();
            let again = plan(&file, &refs, opts);
            prop_assert!(again.iter().all(|s| s.action == Action::Unchanged), "{:?}", again.iter().map(|s| s.line()).collect::<Vec<_>>());
            if prune {
                prop_assert_eq!(after.len(), file.len());
            }
        }
    }
}
