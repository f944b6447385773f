//! Test servers shared by the integration tests: `mod support;` in a test file, then
//! `support::umami_server::UmamiServer` (see that module's docs for its API).
#![allow(dead_code, unreachable_pub)]

pub mod umami_server;
