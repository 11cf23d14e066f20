//! Per-invocation counts that end up in the report. A component instance runs
//! one invocation at a time on one thread, so a thread-local is enough and
//! spares every reader and writer a handle to the context.

use crate::Error;
use std::cell::RefCell;

#[derive(Default)]
pub(crate) struct Tally {
    pub records_in: u64,
    pub records_out: u64,
    pub records_rejected: u64,
    /// A write that failed where it could not be returned (a writer's `Drop`).
    pub lost_write: Option<Error>,
}

thread_local! {
    static TALLY: RefCell<Tally> = RefCell::new(Tally::default());
}

pub(crate) fn with<R>(f: impl FnOnce(&mut Tally) -> R) -> R {
    TALLY.with(|tally| f(&mut tally.borrow_mut()))
}

pub(crate) fn take() -> Tally {
    TALLY.with(|tally| std::mem::take(&mut *tally.borrow_mut()))
}
