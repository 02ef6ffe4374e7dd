//! Bounded, process-wide interning: a small set of texts that repeat on every call (tenant ids,
//! route names) copied once and kept for the life of the process, so calls carry `&'static str`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};

/// Up to `cap` distinct texts, each with a value made once beside it.
pub(crate) struct Interner<V: 'static> {
    table: OnceLock<RwLock<HashMap<&'static str, V>>>,
    full: AtomicBool,
    cap: usize,
}

impl<V: Copy + 'static> Interner<V> {
    pub(crate) const fn new(cap: usize) -> Self {
        Interner {
            table: OnceLock::new(),
            full: AtomicBool::new(false),
            cap,
        }
    }

    /// The interned copy of `text` and its value (`make` runs once per distinct text), or
    /// `Err(first)` once `cap` texts are held: `first` is true for the first refusal only, so the
    /// caller can say so once.
    pub(crate) fn get(
        &self,
        text: &str,
        make: impl FnOnce(&'static str) -> V,
    ) -> Result<(&'static str, V), bool> {
        let table = self.table.get_or_init(Default::default);
        let hit = |table: &HashMap<&'static str, V>| {
            table.get_key_value(text).map(|(key, value)| (*key, *value))
        };
        if let Some(found) = hit(&table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
        {
            return Ok(found);
        }
        if self.full.load(Ordering::Relaxed) {
            return Err(false);
        }
        let mut table = table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(found) = hit(&table) {
            return Ok(found);
        }
        if table.len() >= self.cap {
            return Err(!self.full.swap(true, Ordering::Relaxed));
        }
        let key: &'static str = Box::leak(text.to_owned().into_boxed_str());
        let value = make(key);
        table.insert(key, value);
        Ok((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::Interner;

    #[test]
    fn each_text_is_kept_once_up_to_the_cap() {
        static TABLE: Interner<usize> = Interner::new(2);
        let (a, one) = TABLE.get("a", |key| key.len()).unwrap();
        let (again, same) = TABLE.get(&String::from("a"), |_| unreachable!()).unwrap();
        assert!(std::ptr::eq(a, again));
        assert_eq!((one, same), (1, 1));
        assert!(TABLE.get("bb", |key| key.len()).is_ok());
        assert_eq!(
            TABLE.get("ccc", |key| key.len()),
            Err(true),
            "first refusal"
        );
        assert_eq!(TABLE.get("dddd", |key| key.len()), Err(false));
        assert!(
            TABLE.get("a", |_| unreachable!()).is_ok(),
            "known texts still answer"
        );
    }
}
