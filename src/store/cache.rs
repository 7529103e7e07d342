//! Caches of immutable versioned data, per database. A policy version and a catalogue version
//! never change once written, so they are cached by version; every use first reads the current
//! version number inside its own transaction (one small query), so a new version is picked up by
//! the very next transaction on every replica — no invalidation messages, no stale reads.

use super::catalogue::CatalogueRow;
use crate::domain::policy::Policy;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Regions whose catalogues are kept at most; the cache is cleared when it would grow past it.
const MAX_CATALOGUES: usize = 64;
/// Policy versions kept at most.
const MAX_POLICIES: usize = 4096;

/// A region's catalogue at one version: every entry of every code, by code.
#[derive(Debug, Default)]
pub struct CatalogueSnapshot {
    pub version: i64,
    pub by_code: HashMap<String, Vec<CatalogueRow>>,
}

#[derive(Debug, Default)]
pub struct Caches {
    policies: RwLock<HashMap<(String, i64), Arc<Policy>>>,
    catalogues: RwLock<HashMap<String, Arc<CatalogueSnapshot>>>,
}

impl Caches {
    pub fn policy(&self, region: &str, version: i64) -> Option<Arc<Policy>> {
        let map = self.policies.read().ok()?;
        map.get(&(region.to_owned(), version)).cloned()
    }

    pub fn put_policy(&self, region: &str, version: i64, policy: Arc<Policy>) {
        if let Ok(mut map) = self.policies.write() {
            if map.len() >= MAX_POLICIES {
                map.clear();
            }
            map.insert((region.to_owned(), version), policy);
        }
    }

    /// The cached catalogue of `region` if it is at `version`.
    pub fn catalogue(&self, region: &str, version: i64) -> Option<Arc<CatalogueSnapshot>> {
        let map = self.catalogues.read().ok()?;
        map.get(region).filter(|c| c.version == version).cloned()
    }

    pub fn put_catalogue(&self, region: &str, snapshot: Arc<CatalogueSnapshot>) {
        if let Ok(mut map) = self.catalogues.write() {
            if map.len() >= MAX_CATALOGUES && !map.contains_key(region) {
                map.clear();
            }
            map.insert(region.to_owned(), snapshot);
        }
    }
}
