//! The durable spool (feature `spool`): a destination's queue kept on disk by its worker.
//!
//! See [`SpoolConfig`](crate::config::SpoolConfig) for the settings and the README's
//! "Surviving crashes and restarts" for what each sync mode keeps. The worker's side is
//! `dispatch::spooled`; this module is the store ([`store`]: the one file that knows redb)
//! and opening it when a handle is built.

pub(crate) mod store;

use std::sync::{Arc, Mutex};

use crate::config::{ConfigError, ConfigErrorKind, SpoolConfig};
use store::{Salvaged, Store, StoreError};

/// A lane's spool: its settings, and the store once the handle's builder opened it.
#[derive(Debug)]
pub(crate) struct Spool {
    pub(crate) config: SpoolConfig,
    /// `telemetry.destinations.<name>.spool`, and its line in the file, for errors.
    pub(crate) key_path: String,
    pub(crate) line: Option<usize>,
    pub(crate) slot: Arc<Mutex<Slot>>,
    /// What opening it salvaged from a file redb could not open.
    pub(crate) salvaged: Option<Salvaged>,
}

/// The store, when it is usable, and why not otherwise. Shared with the blocking tasks that
/// use it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) store: Option<Store>,
    pub(crate) failure: Option<String>,
}

impl Slot {
    /// The store, if it is open and not broken.
    pub(crate) fn usable(&mut self) -> Option<&mut Store> {
        self.store.as_mut().filter(|s| s.is_open())
    }

    /// Opens the store again after a failure (the old one is closed first: it holds the
    /// folder's lock). Salvage counts are returned for the counters.
    pub(crate) fn reopen(&mut self, config: &SpoolConfig) -> Result<Option<Salvaged>, String> {
        self.store = None;
        match Store::open(&config.path, config.max_bytes, config.sync) {
            Ok((store, salvaged)) => {
                self.store = Some(store);
                self.failure = None;
                Ok(salvaged)
            }
            Err(e) => {
                let why = e.to_string();
                self.failure = Some(why.clone());
                Err(why)
            }
        }
    }
}

impl Spool {
    /// The settings of a lane's spool, not opened yet.
    pub(crate) fn configured(config: SpoolConfig, key_path: String, line: Option<usize>) -> Self {
        Spool {
            config,
            key_path,
            line,
            slot: Arc::default(),
            salvaged: None,
        }
    }

    /// Opens the store. A folder another process uses is an error (the handle is not built);
    /// any other failure (an unwritable path, a full disk) is logged, and the destination
    /// starts without its spool, in memory, its worker trying the spool again later.
    pub(crate) fn open(&mut self, destination: &str) -> Result<(), ConfigError> {
        let config = &self.config;
        match Store::open(&config.path, config.max_bytes, config.sync) {
            Ok((store, salvaged)) => {
                let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                slot.store = Some(store);
                self.salvaged = salvaged;
                Ok(())
            }
            Err(StoreError::InUse(why)) => {
                Err(
                    ConfigError::new(format!("{}.path", self.key_path), self.line, why)
                        .with_kind(ConfigErrorKind::Io),
                )
            }
            Err(StoreError::Failed(why)) => {
                tracing::warn!(
                    target: "tower_telemetry",
                    destination = %crate::diag::Escaped(destination),
                    error = %crate::diag::Escaped(&why),
                    "the telemetry spool cannot be used; this destination's events stay in memory until it can"
                );
                let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
                slot.failure = Some(why);
                Ok(())
            }
        }
    }
}

/// Opens the spool of every lane that has one; errors are appended to `errors`.
pub(crate) fn open_lanes(lanes: &mut [crate::dispatch::LaneSpec], errors: &mut Vec<ConfigError>) {
    for lane in lanes {
        if let Some(spool) = &mut lane.spool {
            if let Err(e) = spool.open(&lane.name) {
                errors.push(e);
            }
        }
    }
}
