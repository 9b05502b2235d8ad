//! Integration tests of the event log engine (one binary, one module per concern).
// Tests: a panic is the failure report, so unwrap/expect are the clearest assertions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod append_rules;
mod checkpoint;
mod concurrency;
mod corruption;
mod crash;
mod faults;
mod lock;
mod reads;
mod roundtrip;
mod support;
mod tools;
