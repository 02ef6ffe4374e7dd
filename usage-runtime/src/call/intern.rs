//! Bounded, process-wide interning: a small set of texts that repeat on every call (tenant ids,
//! route names) copied once and kept for the life of the process, so calls carry `&'static str`.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use std::thread::LocalKey;

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

/// Tenants and models are few and repeat on every call: each distinct one is copied once, for
/// the life of the process, so a call carries a `&'static str` and the hot path neither allocates
/// nor leaves a free to the worker thread. Past [`MAX_INTERNED_TENANTS`] distinct texts (or for
/// one longer than [`MAX_INTERNED_LEN`]), a call carries its own copy, as before: at most ~13 MB
/// are kept, and ids from untrusted input can only make later new ones slower, never lose them.
const MAX_INTERNED_TENANTS: usize = 100_000;
pub(crate) const MAX_INTERNED_LEN: usize = 128;
/// Entries of each thread's front table (a hit there takes no lock).
const LOCAL_TENANTS: usize = 4096;

pub(crate) fn intern(text: &str) -> Cow<'static, str> {
    thread_local! {
        static LAST: Cell<&'static str> = const { Cell::new("") };
    }
    intern_after(text, &LAST)
}

/// A model's name, interned as a tenant's id is.
pub(crate) fn intern_model(text: &str) -> Cow<'static, str> {
    thread_local! {
        static LAST: Cell<&'static str> = const { Cell::new("") };
    }
    intern_after(text, &LAST)
}

/// Interns `text`, first comparing it with `last`, this thread's last result for the same kind
/// of text: a thread mostly serves one tenant and one model in a row, and a comparison of a few
/// bytes is cheaper than hashing them.
fn intern_after(text: &str, last: &'static LocalKey<Cell<&'static str>>) -> Cow<'static, str> {
    let hit = last.try_with(|last| {
        let seen = last.get();
        (!seen.is_empty() && seen == text).then_some(seen)
    });
    if let Ok(Some(seen)) = hit {
        return Cow::Borrowed(seen);
    }
    let interned = intern_new(text);
    if let Cow::Borrowed(interned) = interned {
        let _ = last.try_with(|last| last.set(interned));
    }
    interned
}

fn intern_new(text: &str) -> Cow<'static, str> {
    use std::cell::RefCell;
    use std::collections::HashSet;

    thread_local! {
        static LOCAL: RefCell<HashSet<&'static str>> = RefCell::new(HashSet::new());
    }
    if text.len() > MAX_INTERNED_LEN {
        return Cow::Owned(text.to_owned());
    }
    let interned = LOCAL.try_with(|local| {
        if let Some(hit) = local.borrow().get(text) {
            return Some(*hit);
        }
        let interned = intern_shared(text)?;
        let mut local = local.borrow_mut();
        if local.len() < LOCAL_TENANTS {
            local.insert(interned);
        }
        Some(interned)
    });
    match interned {
        Ok(Some(interned)) => Cow::Borrowed(interned),
        _ => Cow::Owned(text.to_owned()),
    }
}

/// The process-wide table behind the per-thread ones; `None` once it is full.
fn intern_shared(text: &str) -> Option<&'static str> {
    static SHARED: Interner<()> = Interner::new(MAX_INTERNED_TENANTS);
    SHARED.get(text, |_| ()).ok().map(|(text, ())| text)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn interning_answers_for_the_text_asked_whatever_came_before() {
        let texts = ["acme", "globex", "acme", "acme", "", "initech", "globex"];
        for text in texts {
            assert_eq!(intern(text), text);
            assert_eq!(intern_model(text), text);
        }
        let copy = String::from("acme");
        assert!(matches!(intern(&copy), Cow::Borrowed("acme")));
        assert!(std::ptr::eq(
            intern(&copy).as_ptr(),
            intern("acme").as_ptr()
        ));
        let long = "x".repeat(MAX_INTERNED_LEN + 1);
        assert!(matches!(intern(&long), Cow::Owned(ref text) if *text == long));
        assert!(matches!(intern(&long), Cow::Owned(_)));
    }
}
