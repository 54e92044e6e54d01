//! tollgate's test-and-bench harness: real `redis-server` processes on free ports
//! (`redis_server`; Redis Clusters: `cluster`; a primary, a replica and sentinels:
//! `sentinel`), tollgates in-process or as separate processes (`instance`), and a small
//! JSON client (`client`). Never a mocked Redis. The tests use it through `tests/common`,
//! the benches directly.

pub mod client;
pub mod cluster;
pub mod instance;
pub mod proc_stats;
pub mod redis_server;
pub mod sentinel;

pub use client::{Answer, Client};
pub use instance::{Backend, Process, Tollgate, settings, tollgate_binary};
pub use redis_server::{RedisServer, free_port};

use std::time::{Duration, Instant};

/// Runs each named `async fn(Backend)` as two tests: on the memory store and on Redis.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Memory).await } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Redis).await } )*
        }
    };
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
