//! API tests: the real server on port 0 against a fresh SQLite file or a fresh PostgreSQL
//! database, driven over HTTP, with database state asserted afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod accounts;
mod assessments;
mod authz;
mod binary;
mod crash;
mod delivery;
mod events;
mod faults;
mod hostile;
mod idempotency;
mod inventory;
mod platform;
mod secrets;
