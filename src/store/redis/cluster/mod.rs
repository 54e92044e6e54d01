//! Redis Cluster (`--redis-mode cluster`; docs/redis-topologies.md, "Redis Cluster"):
//! the connection (`conn`), hash slots (`slot`), checks and usage reports split by slot
//! with cross-shard compensation (`shards`), the management API's live usage by slot
//! (`read_usage`), and what a config write does to counters in another slot
//! (`counters`).
//! Key names: `keys.rs`.

mod conn;
mod counters;
mod migrate;
mod read_usage;
mod shards;
mod slot;

pub(crate) use self::conn::{Conn, LazyCluster};
pub(crate) use self::migrate::migrate_counters;
pub(crate) use self::shards::Shards;
pub(crate) use self::slot::key_slot;
