//! The worker's in-memory view of the destinations, fed by a watch on `hs_destinations`:
//! id → destination, and the subject index that tells which destinations an event wants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::index::SubjectIndex;
use crate::model::Destination;

#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
    /// The last bucket revision the watch applied (its entries come in revision order).
    watched: AtomicU64,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<Arc<str>, Arc<Destination>>,
    /// Bucket revision of what `by_id` holds (or of its deletion), so that an older entry
    /// arriving late (the watch after the API's own write) never replaces a newer one.
    revisions: HashMap<Arc<str>, u64>,
    index: SubjectIndex,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<Arc<Destination>> {
        self.read().by_id.get(id).cloned()
    }

    /// Every bucket write up to `revision` has been applied by the watch.
    pub fn watched_up_to(&self, revision: u64) {
        self.watched.fetch_max(revision, Ordering::AcqRel);
    }

    /// The last bucket revision the watch applied.
    pub fn watched(&self) -> u64 {
        self.watched.load(Ordering::Acquire)
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

    /// Applies a destination at bucket `revision`; an older revision than the one held is
    /// ignored.
    pub fn upsert(&self, destination: Destination, revision: u64) {
        let mut inner = self.inner.write().expect("registry lock is never poisoned");
        let id: Arc<str> = Arc::from(destination.id.as_str());
        if inner.revisions.get(&id).is_some_and(|r| *r > revision) {
            return;
        }
        inner.revisions.insert(id.clone(), revision);
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

    /// Removes a destination deleted at bucket `revision`.
    pub fn remove(&self, id: &str, revision: u64) -> Option<Arc<Destination>> {
        let mut inner = self.inner.write().expect("registry lock is never poisoned");
        if inner.revisions.get(id).is_some_and(|r| *r > revision) {
            return None;
        }
        inner.revisions.insert(Arc::from(id), revision);
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
