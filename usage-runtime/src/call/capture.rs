//! The hook a test capture (`testing::Capture`) sets on its thread: a call that starts while one
//! is set goes to it instead of the installed tracker.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use super::raw::RawCall;

/// Takes the calls captured on a thread.
pub(crate) trait Hook: fmt::Debug + Send + Sync {
    fn push(&self, call: RawCall);
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<dyn Hook>>> = const { RefCell::new(None) };
}

/// The capture active on this thread, if any.
pub(crate) fn current() -> Option<Arc<dyn Hook>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Sets the thread's capture, restoring the previous one when dropped.
pub(crate) struct Scope {
    previous: Option<Arc<dyn Hook>>,
}

impl Scope {
    pub(crate) fn enter(hook: Arc<dyn Hook>) -> Scope {
        let previous = CURRENT.with(|current| current.replace(Some(hook)));
        Scope { previous }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}
