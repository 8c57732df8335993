//! The worker's in-memory view of the destinations, fed by a watch on `hs_destinations`:
//! id → destination, and the subject index that tells which destinations an event wants.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::index::SubjectIndex;
use crate::model::Destination;

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Arc<str>, Arc<Destination>>,
    index: SubjectIndex,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<Arc<Destination>> {
        self.read().by_id.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Destination>> {
        self.read().by_id.values().cloned().collect()
    }

    /// Destinations of `tenant` whose patterns match `event_type`.
    pub fn matching(&self, tenant: &str, event_type: &str) -> Vec<Arc<str>> {
        self.read().index.lookup(tenant, event_type)
    }

    pub fn upsert(&self, destination: Destination) {
        let mut inner = self.inner.write().expect("registry lock is never poisoned");
        let id: Arc<str> = Arc::from(destination.id.as_str());
        if let Some(old) = inner.by_id.remove(&id) {
            for p in &old.event_types {
                inner.index.remove(old.tenant.as_str(), p.as_str(), &id);
            }
        }
        for p in &destination.event_types {
            inner
                .index
                .insert(destination.tenant.as_str(), p.as_str(), &id);
        }
        inner.by_id.insert(id, Arc::new(destination));
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Destination>> {
        let mut inner = self.inner.write().expect("registry lock is never poisoned");
        let old = inner.by_id.remove(id)?;
        for p in &old.event_types {
            inner.index.remove(old.tenant.as_str(), p.as_str(), id);
        }
        Some(old)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // No code panics while holding the lock, so it is never poisoned.
        self.inner.read().expect("registry lock is never poisoned")
    }
}
