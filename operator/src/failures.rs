//! Consecutive reconcile failures per MLModel, for exponential backoff.
//!
//! An entry is removed when its model reconciles cleanly. A deleted model is never reconciled
//! again, so entries not touched for longer than [`FORGET_AFTER`] are pruned on every record:
//! a model that still fails is retried at least every 5 minutes and keeps its entry fresh.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use modelship_crds::MLModel;

/// Twice the longest backoff: an entry older than this belongs to a model that is gone.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct Entry {
    /// The failing object's uid: a model deleted and re-created under the same name starts at 0.
    uid: Option<String>,
    count: u32,
    last: Instant,
}

/// The failure counts; see the module docs.
#[derive(Debug, Default)]
pub struct Failures {
    entries: HashMap<ObjectRef<MLModel>, Entry>,
}

impl Failures {
    /// Counts one more failure of `model` at `now`, prunes stale entries, and returns the count.
    pub fn record(&mut self, model: &MLModel, now: Instant) -> u32 {
        self.prune(now);
        let uid = model.uid();
        let entry =
            self.entries.entry(ObjectRef::from_obj(model)).or_insert(Entry { uid: uid.clone(), count: 0, last: now });
        if entry.uid != uid {
            *entry = Entry { uid, count: 0, last: now };
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        entry.count
    }

    /// `model` reconciled cleanly.
    pub fn clear(&mut self, model: &MLModel) {
        self.entries.remove(&ObjectRef::from_obj(model));
    }

    /// Drops entries not touched since `now - FORGET_AFTER` (their models were deleted).
    pub fn prune(&mut self, now: Instant) {
        self.entries.retain(|_, e| now.saturating_duration_since(e.last) <= FORGET_AFTER);
    }

    /// How many models have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no model has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
