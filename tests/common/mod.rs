//! The tests' harness is the `tollgate-testkit` crate (`testkit/`), shared with the
//! benches; this module re-exports it, so a test says `mod common;` and
//! `use common::{…}` (a test that is a directory, `tests/<name>/main.rs`, says
//! `#[path = "../common/mod.rs"] mod common;`).
#![allow(unused_imports)]

pub use tollgate_testkit::*;

pub mod configs;

/// Runs each named `async fn(Backend)` as two tests: on the memory store and on Redis
/// (`tollgate_testkit::on_every_store`, here at the test crate's root).
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        tollgate_testkit::on_every_store!($($name),*);
    };
}
