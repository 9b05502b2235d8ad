//! `trueline-bench`: the load tool of Trueline.
//!
//! It drives a running server (or one it starts on a temporary data directory) with named
//! workloads, in a closed loop (C clients, each sending its next request when the previous
//! one answered) or an open loop (a fixed arrival schedule, latency measured from the
//! *intended* send time so a slow server cannot hide its queueing: no coordinated omission;
//! requests the in-flight cap kept from being sent are in the percentiles at a lower bound).
//! Only successful operations count as throughput and latency; failures count towards an
//! error rate bounded by `--max-error-rate`. Latencies go to HDR histograms (microseconds);
//! the `trueline` process's RSS and CPU are sampled from `/proc`; and every run ends by
//! checking that the server told the truth (final quantities equal the acknowledged deltas,
//! history records match them, the items and events stored are exactly those acknowledged,
//! events are readable and gapless, one submission per invite). A run whose checks fail
//! exits non-zero.
//!
//! Layout:
//! - [`cli`]: the command line and duration parsing;
//! - [`api`]: a thin HTTP client (one request → status, problem `code`, body);
//! - [`schedule`]: the open-loop arrival schedule (pure);
//! - [`stats`]: histograms, percentiles, medians and the per-run recorder;
//! - [`driver`]: the closed and open loops;
//! - [`workloads`]: set-up, one operation and the end-of-run checks of each workload;
//! - [`verify`]: the pure comparison of what the server acknowledged with what it stores;
//! - [`procfs`]: RSS and CPU of a process from `/proc`;
//! - [`server`]: starting and stopping a `trueline` child process;
//! - [`report`]: the JSON document, the human table, machine information;
//! - [`chart`]: SVG charts (plotters, SVG backend only);
//! - [`run`]: one run and the `sweep` over concurrency levels.

pub mod api;
pub mod chart;
pub mod cli;
pub mod driver;
pub mod procfs;
pub mod report;
pub mod run;
pub mod schedule;
pub mod server;
pub mod stats;
pub mod verify;
pub mod workloads;
