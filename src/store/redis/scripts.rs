//! The Lua scripts of `lua/`, composed from named library fragments (`lua/lib/`), and how
//! they are called: EVALSHA, EVAL when Redis lost them.
//!
//! Each script names the fragments it builds on, then its own file(s). A fragment's
//! `-- requires:` line names the fragments it calls into; the tests check that every
//! script lists those first, includes each fragment once, and declares no name twice at
//! its top level (a second `local` would shadow the first), and load each script into a
//! real Redis (`tests/lua_scripts.rs`). The fragments:
//!
//! | fragment | holds | requires |
//! |---|---|---|
//! | `clock` | `now_ms` (Redis `TIME`), `DAY_MS` | |
//! | `counts` | the library functions as locals, `MAX_USED`, `clamp_used`, `admits` | |
//! | `windows` | sliding windows (`win_*`) | counts |
//! | `periods` | budget periods: `period_bounds`, `budget_open`, `budget_encode` | clock, counts |
//! | `counters` | one config's counters: `open_config`, `used_of`, `save_config` | counts, windows, periods |
//! | `alerts` | threshold events: `alert_expire`, `alert_rise` | counts |
//! | `leases` | how much of a limit a replica may lease: `lease_room` | counts |
//! | `counter_updates` | a config update's effect on its counters: `update_counters` | counts, periods |
//! | `config_plane` | config-plane KEYS/ARGV, the epoch fence, `write_guard`, `refusal`, `commit` | clock |
//!
//! Every script here is in `ALL`, and `Scripts::all` loads and checks each (`/ready`).

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, Script, ServerErrorKind};

/// A composed script: the parts it is made of (paths under `lua/`, without `.lua`), in
/// order, and its source.
pub struct Composed {
    pub name: &'static str,
    pub parts: &'static [&'static str],
    pub source: &'static str,
}

/// `lua/<part>.lua` of each part, in order, one after the other.
macro_rules! compose {
    ($($part:literal),+ $(,)?) => {
        concat!($(include_str!(concat!("../../../lua/", $part, ".lua")), "\n"),+)
    };
}

/// A `Composed` of the named parts.
macro_rules! composed {
    ($name:ident = [$($part:literal),+ $(,)?]) => {
        Composed {
            name: stringify!($name),
            parts: &[$($part),+],
            source: compose!($($part),+),
        }
    };
}

/// Each script's source as a `pub const` (for tests and benchmarks that call them
/// directly), and `ALL`, the table of every script with its parts.
macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = [$($part:literal),+ $(,)?];)+) => {
        $($(#[$doc])* pub const $name: &str = compose!($($part),+);)+

        /// Every script tollgate runs.
        pub const ALL: &[Composed] = &[$(Composed {
            name: stringify!($name),
            parts: &[$($part),+],
            source: $name,
        }),+];
    };
}

scripts! {
    /// Checks, usage reports and leases, coalesced: the counters, the operations, the entry.
    BATCH = ["lib/clock", "lib/counts", "lib/windows", "lib/periods", "lib/counters",
        "lib/alerts", "lib/leases", "check", "usage", "lease", "batch"];
    READ_USAGE = ["lib/clock", "lib/counts", "lib/windows", "lib/periods", "lib/counters",
        "read_usage"];
    CONFIG_CREATE = ["lib/clock", "lib/config_plane", "config_create"];
    /// Also seeds, drops and extends the config's counters (`update_counters`).
    CONFIG_UPDATE = ["lib/clock", "lib/counts", "lib/periods", "lib/counter_updates",
        "lib/config_plane", "config_update"];
    /// Redis Cluster only: a config update's changes to its counters, in their own slot.
    COUNTERS_UPDATE = ["lib/clock", "lib/counts", "lib/periods", "lib/counter_updates",
        "counters_update"];
    /// Redis Cluster only: a config's counters moved from another key layout, added in.
    COUNTERS_MIGRATE = ["lib/clock", "lib/counts", "lib/windows", "lib/periods",
        "lib/counters", "counters_migrate"];
    CONFIG_DELETE = ["lib/clock", "lib/config_plane", "config_delete"];
    CONFIG_SYNC = ["lib/clock", "lib/config_plane", "config_sync"];
    RESEED_BEGIN = ["lib/clock", "lib/config_plane", "reseed_begin"];
    RESEED_CHUNK = ["lib/clock", "lib/config_plane", "reseed_chunk"];
    RESEED_END = ["lib/clock", "lib/config_plane", "reseed_end"];
    /// The replica registry: announce this replica, count the live ones.
    REPLICAS = ["lib/clock", "replicas"];
}

/// The counters' arithmetic alone (windows and periods), for `tests/lua_parity.rs`:
/// the same fragments as the production scripts, without any script's body.
pub const COUNTER_LIB: Composed = composed!(
    COUNTER_LIB = [
        "lib/clock",
        "lib/counts",
        "lib/windows",
        "lib/periods",
        "lib/leases"
    ]
);
/// `COUNTER_LIB`'s source.
pub const LIB: &str = COUNTER_LIB.source;
/// The counters' arithmetic and the threshold events on them, for `tests/lua_parity.rs`.
pub const ALERT_LIB: Composed = composed!(
    ALERT_LIB = [
        "lib/clock",
        "lib/counts",
        "lib/windows",
        "lib/periods",
        "lib/alerts"
    ]
);

/// A script and its source, so it can be sent whole when Redis has lost it.
pub(super) struct Lua {
    pub(super) source: &'static str,
    pub(super) script: Script,
}

impl Lua {
    pub(super) fn new(source: &'static str) -> Self {
        Lua {
            source,
            script: Script::new(source),
        }
    }
}

pub(super) struct Scripts {
    pub(super) batch: Lua,
    pub(super) read_usage: Lua,
    pub(super) create: Lua,
    pub(super) update: Lua,
    pub(super) delete: Lua,
    pub(super) sync: Lua,
    pub(super) reseed_begin: Lua,
    pub(super) reseed_chunk: Lua,
    pub(super) reseed_end: Lua,
    pub(super) counters_update: Lua,
    pub(super) replicas: Lua,
    pub(super) counters_migrate: Lua,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            batch: Lua::new(BATCH),
            read_usage: Lua::new(READ_USAGE),
            create: Lua::new(CONFIG_CREATE),
            update: Lua::new(CONFIG_UPDATE),
            delete: Lua::new(CONFIG_DELETE),
            sync: Lua::new(CONFIG_SYNC),
            reseed_begin: Lua::new(RESEED_BEGIN),
            reseed_chunk: Lua::new(RESEED_CHUNK),
            reseed_end: Lua::new(RESEED_END),
            counters_update: Lua::new(COUNTERS_UPDATE),
            replicas: Lua::new(REPLICAS),
            counters_migrate: Lua::new(COUNTERS_MIGRATE),
        }
    }

    /// Every script of `ALL`: what `/ready` checks Redis has (and loads if not).
    pub(super) fn all(&self) -> [&Script; 12] {
        [
            &self.sync.script,
            &self.reseed_begin.script,
            &self.reseed_chunk.script,
            &self.reseed_end.script,
            &self.batch.script,
            &self.read_usage.script,
            &self.create.script,
            &self.update.script,
            &self.delete.script,
            &self.counters_update.script,
            &self.replicas.script,
            &self.counters_migrate.script,
        ]
    }
}

/// Runs `lua` with the keys and arguments that `fill` writes after the script (first
/// the number of keys). EVALSHA first; if Redis lacks the script (restarted, or
/// `SCRIPT FLUSH`), EVAL of the source, which runs and caches it in one step. (Loading
/// and then retrying the EVALSHA, as `redis::Script` does, fails when a flush falls in
/// between.) `fill` writes straight into the command: no per-argument buffers.
pub(super) async fn invoke<T: FromRedisValue>(
    conn: &mut impl ConnectionLike,
    lua: &Lua,
    fill: impl Fn(&mut redis::Cmd),
) -> redis::RedisResult<T> {
    let command = |verb: &str, script: &str| {
        let mut cmd = redis::cmd(verb);
        cmd.arg(script);
        fill(&mut cmd);
        cmd
    };
    match command("EVALSHA", lua.script.get_hash())
        .query_async(conn)
        .await
    {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            command("EVAL", lua.source).query_async(conn).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The fragments a part's `-- requires:` line names (`lib/…`).
    fn requires(part: &str) -> Vec<String> {
        let path = format!("{}/lua/{part}.lua", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("part exists");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("-- requires:"))
            .unwrap_or_else(|| panic!("{path} has no `-- requires:` line"));
        line.split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty() && *r != "nothing")
            .map(|r| format!("lib/{r}"))
            .collect()
    }

    /// Names declared by a `local` at the top level (column 0) of `source`.
    fn top_level_names(source: &str) -> Vec<&str> {
        let mut names = Vec::new();
        for line in source.lines() {
            let Some(decl) = line.strip_prefix("local ") else {
                continue;
            };
            if let Some(f) = decl.strip_prefix("function ") {
                names.push(f.split('(').next().unwrap_or(f).trim());
            } else {
                let lhs = decl.split('=').next().unwrap_or(decl);
                names.extend(lhs.split(',').map(str::trim));
            }
        }
        names
    }

    #[test]
    fn every_script_is_composed_soundly() {
        for script in ALL.iter().chain([&COUNTER_LIB]) {
            let mut seen = HashSet::new();
            for part in script.parts {
                assert!(seen.insert(*part), "{}: {part} twice", script.name);
                if part.starts_with("lib/") {
                    for needed in requires(part) {
                        assert!(
                            seen.contains(needed.as_str()),
                            "{}: {part} requires {needed} before it",
                            script.name
                        );
                    }
                }
            }
            let mut declared = HashSet::new();
            for name in top_level_names(script.source) {
                assert!(
                    declared.insert(name),
                    "{}: `{name}` declared twice at the top level (the second shadows the first)",
                    script.name
                );
            }
        }
        assert_eq!(
            top_level_names("local function a(x)\nlocal b, c = 1, 2\n  local d = 3\nlocal e"),
            ["a", "b", "c", "e"],
            "top-level declarations only"
        );
    }

    #[test]
    fn ready_checks_every_script() {
        let scripts = Scripts::new();
        let loaded: HashSet<&str> = scripts.all().iter().map(|s| s.get_hash()).collect();
        let all: HashSet<String> = ALL
            .iter()
            .map(|s| Script::new(s.source).get_hash().to_string())
            .collect();
        assert_eq!(loaded.len(), ALL.len(), "no script twice");
        assert!(all.iter().all(|h| loaded.contains(h.as_str())));
    }
}
