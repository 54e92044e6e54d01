//! The Lua scripts of `lua/` and how they are called: EVALSHA, EVAL when Redis lost them.

use redis::aio::ConnectionLike;
use redis::{ErrorKind, FromRedisValue, Script, ServerErrorKind};

/// A script from `lua/`, with the shared prelude it builds on prepended.
macro_rules! lua {
    ($prelude:literal, $name:literal) => {
        concat!(
            include_str!(concat!("../../../lua/", $prelude)),
            "\n",
            include_str!(concat!("../../../lua/", $name))
        )
    };
}

// Source of every script, for tests and benchmarks that call them directly.
/// Checks and usage reports, coalesced: `lib.lua`, the two operations, and the entry.
pub const BATCH: &str = concat!(
    include_str!("../../../lua/lib.lua"),
    "\n",
    include_str!("../../../lua/check.lua"),
    "\n",
    include_str!("../../../lua/usage.lua"),
    "\n",
    include_str!("../../../lua/batch.lua")
);
pub const READ_USAGE: &str = lua!("lib.lua", "read_usage.lua");
pub const LIB: &str = include_str!("../../../lua/lib.lua");
pub const CONFIG_CREATE: &str = lua!("config_lib.lua", "config_create.lua");
/// Also builds on `lib.lua` (budget periods, to seed new budgets); `config_lib.lua`'s
/// `now_ms` and `past_deadline` come after it and shadow lib.lua's.
pub const CONFIG_UPDATE: &str = concat!(
    include_str!("../../../lua/lib.lua"),
    "\n",
    lua!("config_lib.lua", "config_update.lua")
);
/// Cluster only: a config update's changes to its counters, in their own slot.
pub const COUNTERS_UPDATE: &str = concat!(
    include_str!("../../../lua/lib.lua"),
    "\n",
    include_str!("../../../lua/counters_update.lua")
);
pub const CONFIG_DELETE: &str = lua!("config_lib.lua", "config_delete.lua");
pub const CONFIG_SYNC: &str = lua!("config_lib.lua", "config_sync.lua");
pub const RESEED_BEGIN: &str = lua!("config_lib.lua", "reseed_begin.lua");
pub const RESEED_CHUNK: &str = lua!("config_lib.lua", "reseed_chunk.lua");
pub const RESEED_END: &str = lua!("config_lib.lua", "reseed_end.lua");

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
        }
    }

    pub(super) fn all(&self) -> [&Script; 9] {
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
