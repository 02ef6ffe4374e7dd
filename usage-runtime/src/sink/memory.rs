//! An in-memory sink, for tests and examples.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use super::Sink;
use crate::error::Error;
use crate::record::UsageRecord;

/// Keeps records in memory, in write order, once per id. Clones share the same records.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    records: Vec<UsageRecord>,
    ids: HashSet<Uuid>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record written so far.
    pub fn records(&self) -> Vec<UsageRecord> {
        self.lock().records.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Sink for MemorySink {
    async fn write(&mut self, batch: &[UsageRecord]) -> Result<(), Error> {
        let mut inner = self.lock();
        for record in batch {
            if inner.ids.insert(record.id) {
                inner.records.push(record.clone());
            }
        }
        Ok(())
    }
}
