//! The embedded store: one process, counters in memory, configs optionally kept in a
//! state file that is replaced atomically (write to a temp file, fsync, rename).

use super::{
    Amounts, BudgetSeed, CheckOutcome, ConfigChanges, ConfigState, LimitOutcome, LimitUsage,
    ReseedOutcome, Seeding, Store, StoreError, USAGE_ID_TTL, UsageDelta, UsageOutcome, WriteError,
    Written, budget_seeds, removed_budget_fields,
};
use crate::limits::period::BudgetCounter;
use crate::limits::window::{SlidingWindow, admits};
use crate::limits::{CompiledConfig, LimitKind, LimitSpec};
use crate::model::ModelConfig;
use crate::state_file::{self, StateFile};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;

/// How often expired counters and request ids are swept out.
const SWEEP_EVERY_MS: i64 = 10_000;

#[derive(Debug, Default)]
struct ConfigCounters {
    windows: HashMap<String, SlidingWindow>,
    budgets: HashMap<String, BudgetCounter>,
    /// Like a Redis TTL: after this nothing in here counts any more.
    expires_ms: i64,
}

#[derive(Debug, Default)]
struct Counters {
    by_config: HashMap<String, ConfigCounters>,
    usage_ids: HashMap<String, i64>,
    next_sweep_ms: i64,
}

#[derive(Debug, Clone)]
struct Configs {
    version: u64,
    /// Never changes: this store never loses its data behind its own back.
    epoch: String,
    configs: HashMap<String, ModelConfig>,
}

impl Default for Configs {
    fn default() -> Self {
        Configs {
            version: 0,
            epoch: uuid::Uuid::new_v4().to_string(),
            configs: HashMap::new(),
        }
    }
}

pub struct MemoryStore {
    configs: Mutex<Configs>,
    counters: Mutex<Counters>,
    /// Serializes config writes so the state file always ends with the latest set.
    write_lock: tokio::sync::Mutex<()>,
    state_file: Option<PathBuf>,
    changes: Arc<Notify>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            configs: Mutex::new(Configs::default()),
            counters: Mutex::new(Counters::default()),
            write_lock: tokio::sync::Mutex::new(()),
            state_file: None,
            changes: Arc::new(Notify::new()),
        }
    }

    /// Loads configs from `path` if it exists (see `crate::state_file::open`).
    pub fn with_state_file(path: &Path) -> Result<Self, String> {
        let mut store = MemoryStore::new();
        if let Some(state) = state_file::open(path)? {
            let configs = store.configs.get_mut();
            configs.version = state.version;
            if let Some(epoch) = state.epoch {
                configs.epoch = epoch;
            }
            configs.configs = state
                .configs
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect();
        }
        store.state_file = Some(path.to_path_buf());
        Ok(store)
    }

    /// Computes the next config set with `change`, persists it, then makes it current.
    async fn write(
        &self,
        change: impl FnOnce(&mut Configs) -> Result<(), WriteError>,
    ) -> Result<Written, WriteError> {
        let _guard = self.write_lock.lock().await;
        let mut next = self.configs.lock().clone();
        change(&mut next)?;
        next.version += 1;
        if let Some(path) = &self.state_file {
            let mut configs: Vec<ModelConfig> = next.configs.values().cloned().collect();
            configs.sort_by(|a, b| a.list_order().cmp(&b.list_order()));
            let state = StateFile {
                version: next.version,
                epoch: Some(next.epoch.clone()),
                configs,
            };
            let path = path.clone();
            tokio::task::spawn_blocking(move || state_file::write_atomically(&path, &state))
                .await
                .map_err(|e| StoreError::Unavailable(format!("state file writer failed: {e}")))?
                .map_err(StoreError::Unavailable)?;
        }
        let written = Written {
            version: next.version,
            epoch: next.epoch.clone(),
        };
        *self.configs.lock() = next;
        Ok(written)
    }

    fn sweep(counters: &mut Counters, now: i64) {
        if now < counters.next_sweep_ms {
            return;
        }
        counters.next_sweep_ms = now + SWEEP_EVERY_MS;
        counters.by_config.retain(|_, c| c.expires_ms > now);
        counters.usage_ids.retain(|_, expires| *expires > now);
    }
}

/// A writer whose snapshot belongs to another epoch must sync first (as with Redis).
fn fence(set: &Configs, epoch: Option<&str>) -> Result<(), WriteError> {
    match epoch {
        Some(e) if e != set.epoch => Err(WriteError::EpochChanged),
        _ => Ok(()),
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

/// One limit's counter, brought up to `now`; the period's (start, end) for budgets.
enum Counter<'a> {
    Window(&'a mut SlidingWindow),
    Budget(&'a mut BudgetCounter, (i64, i64)),
}

impl Counter<'_> {
    fn open<'a>(c: &'a mut ConfigCounters, spec: &LimitSpec, now: i64) -> Counter<'a> {
        match &spec.grid {
            None => {
                let w = c.windows.entry(spec.field.clone()).or_default();
                w.evict(now, spec.len_ms);
                Counter::Window(w)
            }
            Some(grid) => {
                let b = c.budgets.entry(spec.field.clone()).or_default();
                let period = b.roll(grid, now);
                Counter::Budget(b, period)
            }
        }
    }

    fn used(&self) -> i64 {
        match self {
            Counter::Window(w) => w.used(),
            Counter::Budget(b, _) => b.used(),
        }
    }
}

/// New budgets start with their source budget's usage in its current period (added to
/// whatever they hold, so nothing counted is lost).
fn seed_budgets(c: &mut ConfigCounters, seeds: &[BudgetSeed], now: i64) {
    if c.expires_ms <= now {
        return;
    }
    for seed in seeds {
        let (Some(source_grid), Some(target_grid)) = (&seed.source.grid, &seed.target.grid) else {
            continue;
        };
        let Some(mut source) = c.budgets.get(&seed.source.field).copied() else {
            continue;
        };
        source.roll(source_grid, now);
        if source.used() > 0 {
            let target = c.budgets.entry(seed.target.field.clone()).or_default();
            target.roll(target_grid, now);
            target.add(source.used());
        }
    }
}

/// How long a config's counters matter after a write: its longest window or period.
fn lifetime_ms(config: &CompiledConfig, now: i64) -> i64 {
    config
        .limits
        .iter()
        .map(|s| match &s.grid {
            None => s.len_ms,
            Some(g) => g.bounds(now).1 - now,
        })
        .max()
        .unwrap_or(0)
        + 1000
}

impl Store for MemoryStore {
    /// Never lost, so never incremental either: a replica behind is told to reload
    /// (the floor is the version), which for this one-process store is rare.
    async fn config_changes(
        &self,
        _since: u64,
        _limit: usize,
    ) -> Result<ConfigChanges, StoreError> {
        let configs = self.configs.lock();
        Ok(ConfigChanges {
            state: ConfigState {
                epoch: Some(configs.epoch.clone()),
                version: configs.version,
                intact: true,
                seeding: Seeding::None,
                floor: configs.version,
                configs: configs.configs.len() as u64,
            },
            changed: Vec::new(),
            through: configs.version,
        })
    }

    async fn scan_configs(&self, _cursor: u64) -> Result<(u64, Vec<ModelConfig>), StoreError> {
        Ok((0, self.configs.lock().configs.values().cloned().collect()))
    }

    async fn reseed(
        &self,
        _found: Option<&str>,
        _configs: Vec<ModelConfig>,
        _min_version: u64,
    ) -> Result<ReseedOutcome, StoreError> {
        Ok(ReseedOutcome::Adopt)
    }

    async fn get_config(&self, id: &str) -> Result<Option<ModelConfig>, StoreError> {
        Ok(self.configs.lock().configs.get(id).cloned())
    }

    async fn create_config(
        &self,
        config: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        self.write(|set| {
            fence(set, epoch)?;
            let identity = config.identity();
            if let Some(other) = set.configs.values().find(|c| c.identity() == identity) {
                return Err(WriteError::Conflict(other.id.clone()));
            }
            set.configs.insert(config.id.clone(), config.clone());
            Ok(())
        })
        .await
    }

    async fn replace_config(
        &self,
        old: &ModelConfig,
        new: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        let lifetime = CompiledConfig::counter_lifetime_of(new).map_err(StoreError::Corrupt)?;
        let seeds = budget_seeds(old, new).map_err(StoreError::Corrupt)?;
        let written = self
            .write(|set| {
                fence(set, epoch)?;
                match set.configs.get(&old.id) {
                    None => return Err(WriteError::NotFound),
                    Some(c) if c.revision != old.revision => return Err(WriteError::Stale),
                    Some(_) => {}
                }
                let identity = new.identity();
                if let Some(other) = set
                    .configs
                    .values()
                    .find(|c| c.id != new.id && c.identity() == identity)
                {
                    return Err(WriteError::Conflict(other.id.clone()));
                }
                set.configs.insert(new.id.clone(), new.clone());
                Ok(())
            })
            .await?;
        let removed = removed_budget_fields(old, new);
        // Checks still run on the old config until the caller applies the new one, so
        // nothing counts on the new budgets in between.
        if let Some(c) = self.counters.lock().by_config.get_mut(&old.id) {
            seed_budgets(c, &seeds, now_ms());
            for field in removed {
                c.budgets.remove(&field);
            }
            // Kept counters must outlive a longer new limit, as in Redis.
            if c.expires_ms > now_ms() {
                c.expires_ms = c.expires_ms.max(now_ms() + lifetime);
            }
        }
        Ok(written)
    }

    async fn delete_config(
        &self,
        old: &ModelConfig,
        epoch: Option<&str>,
    ) -> Result<Written, WriteError> {
        let written = self
            .write(|set| match set.configs.get(&old.id) {
                _ if fence(set, epoch).is_err() => Err(WriteError::EpochChanged),
                None => Err(WriteError::NotFound),
                Some(c) if c.revision != old.revision => Err(WriteError::Stale),
                Some(_) => {
                    set.configs.remove(&old.id);
                    Ok(())
                }
            })
            .await?;
        self.counters.lock().by_config.remove(&old.id);
        Ok(written)
    }

    async fn check(
        &self,
        configs: &[&CompiledConfig],
        amounts: Amounts,
        dry_run: bool,
    ) -> Result<CheckOutcome, StoreError> {
        let now = now_ms();
        let mut counters = self.counters.lock();
        Self::sweep(&mut counters, now);
        let mut admitted = Vec::new();
        for config in configs {
            let c = counters
                .by_config
                .entry(config.config.id.clone())
                .or_default();
            if c.expires_ms <= now {
                *c = ConfigCounters::default();
            }
            for spec in &config.limits {
                let counter = Counter::open(c, spec, now);
                admitted.push(admits(
                    counter.used(),
                    spec.max,
                    amounts.for_kind(spec.kind),
                ));
            }
        }
        let allowed = admitted.iter().all(|&ok| ok);
        let mut limits = Vec::with_capacity(admitted.len());
        let mut admitted = admitted.into_iter();
        for config in configs {
            let c = counters
                .by_config
                .get_mut(&config.config.id)
                .expect("opened above");
            let mut wrote = false;
            for spec in &config.limits {
                let ok = admitted.next().expect("one per limit");
                let amount = amounts.for_kind(spec.kind);
                let consume = allowed && !dry_run && amount > 0;
                wrote |= consume;
                let outcome = match Counter::open(c, spec, now) {
                    Counter::Window(w) => {
                        if consume {
                            w.add(now, amount);
                        }
                        LimitOutcome {
                            admitted: ok,
                            used: w.used(),
                            reset_after_ms: w.reset_after_ms(now, spec.len_ms),
                            retry_after_ms: if ok {
                                0
                            } else {
                                w.retry_after_ms(now, spec.len_ms, spec.max, amount)
                            },
                        }
                    }
                    Counter::Budget(b, (_, end)) => {
                        if consume {
                            b.add(amount);
                        }
                        LimitOutcome {
                            admitted: ok,
                            used: b.used(),
                            reset_after_ms: end - now,
                            retry_after_ms: if ok { 0 } else { end - now },
                        }
                    }
                };
                limits.push(outcome);
            }
            if wrote {
                c.expires_ms = c.expires_ms.max(now + lifetime_ms(config, now));
            }
        }
        Ok(CheckOutcome {
            allowed,
            limits,
            now_ms: now,
        })
    }

    async fn record_usage(
        &self,
        configs: &[&CompiledConfig],
        delta: UsageDelta,
        request_id: Option<&str>,
    ) -> Result<UsageOutcome, StoreError> {
        if configs.is_empty() {
            return Ok(UsageOutcome::Applied);
        }
        let now = now_ms();
        let mut counters = self.counters.lock();
        Self::sweep(&mut counters, now);
        if let Some(id) = request_id {
            match counters.usage_ids.get(id) {
                Some(&expires) if expires > now => return Ok(UsageOutcome::Duplicate),
                _ => {
                    counters
                        .usage_ids
                        .insert(id.to_string(), now + USAGE_ID_TTL.as_millis() as i64);
                }
            }
        }
        for config in configs {
            let c = counters
                .by_config
                .entry(config.config.id.clone())
                .or_default();
            if c.expires_ms <= now {
                *c = ConfigCounters::default();
            }
            let mut wrote = false;
            for spec in &config.limits {
                let d = match spec.kind {
                    LimitKind::Requests => continue,
                    LimitKind::Tokens => delta.tokens,
                    LimitKind::Budget => delta.cost_nanos,
                };
                if d == 0 {
                    continue;
                }
                wrote = true;
                match Counter::open(c, spec, now) {
                    Counter::Window(w) if d > 0 => w.add(now, d),
                    Counter::Window(w) => w.refund(-d, delta.reserved_at_ms),
                    // A refund of a reservation made in an earlier period has nothing
                    // left to return.
                    Counter::Budget(b, (start, _))
                        if d > 0 || delta.reserved_at_ms.is_none_or(|at| at >= start) =>
                    {
                        b.add(d)
                    }
                    Counter::Budget(..) => {}
                }
            }
            if wrote {
                c.expires_ms = c.expires_ms.max(now + lifetime_ms(config, now));
            }
        }
        Ok(UsageOutcome::Applied)
    }

    async fn read_usage(
        &self,
        configs: &[&CompiledConfig],
    ) -> Result<(i64, Vec<Vec<LimitUsage>>), StoreError> {
        let now = now_ms();
        let mut counters = self.counters.lock();
        let out = configs
            .iter()
            .map(|config| {
                let Some(c) = counters
                    .by_config
                    .get_mut(&config.config.id)
                    .filter(|c| c.expires_ms > now)
                else {
                    return config
                        .limits
                        .iter()
                        .map(|s| LimitUsage {
                            used: 0,
                            start_ms: match &s.grid {
                                None => now - s.len_ms,
                                Some(g) => g.bounds(now).0,
                            },
                        })
                        .collect();
                };
                config
                    .limits
                    .iter()
                    .map(|spec| {
                        let used = Counter::open(c, spec, now).used();
                        let start_ms = match &spec.grid {
                            None => now - spec.len_ms,
                            Some(g) => g.bounds(now).0,
                        };
                        LimitUsage { used, start_ms }
                    })
                    .collect()
            })
            .collect();
        Ok((now, out))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn clock(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(Utc::now())
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }
}
