//! The `trueline` server: configuration, telemetry, startup and shutdown, and the CLI
//! subcommands (`serve`, `config`, `migrate`). The binary in `main.rs` is a thin shell over
//! this library so tests can build and drive the same [`startup::Application`].

pub mod cli;
pub mod client_addr;
pub mod config;
pub mod delivery;
pub mod log_pairing;
pub mod open_files;
pub mod serve;
pub mod startup;
pub mod telemetry;
pub mod unreadable_head;
pub mod workers;
