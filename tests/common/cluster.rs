//! The Redis Cluster harness is `tollgate_testkit::cluster`. This file keeps tests that
//! include it by path (`#[path = "common/cluster.rs"] mod cluster;`) compiling; new
//! tests say `use common::cluster;`.
#![allow(unused_imports)]

pub use tollgate_testkit::cluster::*;
