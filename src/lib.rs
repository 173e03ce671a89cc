//! castgate: a Pingora front door that sends each listener of a streaming
//! farm to an edge that is alive, carries the stream, and has room.
//!
//! Data flows one way: [`config`] → [`poll`] → [`balance::Snapshot`] →
//! selection → answer ([`front`]); [`admin`] reads the same snapshot.

// No unwrap or expect outside tests: the request and poll paths must not
// panic on data.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod balance;
pub mod config;
pub mod control;
pub mod front;
pub mod logs;
pub mod metrics;
pub mod poll;
pub mod reload;
pub mod state;
pub mod tls;
