//! The durable spool (feature `spool`): a destination's queue kept on disk by its worker.
//!
//! See [`SpoolConfig`](crate::config::SpoolConfig) for the settings and the README's
//! "Surviving crashes and restarts" for what each sync mode keeps. The worker's side is
//! `dispatch::spooled`; this module is the store ([`store`]: the one file that knows redb)
//! and opening it when a handle is built.

pub(crate) mod store;
