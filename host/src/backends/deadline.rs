//! A tantivy collector that stops at a deadline, so a search that runs too
//! long ends its thread instead of answering late or never: before and after
//! every segment, once its scorer is built and every thousand documents it
//! yields, it looks at the clock, and past the deadline it fails the search,
//! which [`Deadline::passed`] then tells apart from other errors. The work
//! between two looks is one step of a scorer, which the query limits bound
//! (`query.rs`: terms, phrase terms, depth).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::query::Weight;
use tantivy::{DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TERMINATED, TantivyError};

/// Documents collected between two looks at the clock.
const CHECK_EVERY: u32 = 1024;

/// When a search must stop, and whether it had to.
#[derive(Debug)]
pub struct Deadline {
    at: Instant,
    passed: AtomicBool,
}

impl Deadline {
    pub fn new(at: Instant) -> Self {
        Deadline { at, passed: AtomicBool::new(false) }
    }

    /// Whether a search under this deadline was stopped by it.
    pub fn passed(&self) -> bool {
        self.passed.load(Ordering::Acquire)
    }

    /// An error that stops the search if the deadline has passed.
    pub fn check(&self) -> tantivy::Result<()> {
        if Instant::now() >= self.at {
            self.passed.store(true, Ordering::Release);
            return Err(TantivyError::InternalError("the search ran past its deadline".into()));
        }
        Ok(())
    }
}

/// `inner`, collected under `deadline`.
pub struct WithDeadline<'d, C> {
    pub inner: C,
    pub deadline: &'d Deadline,
}

impl<C: Collector> Collector for WithDeadline<'_, C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn for_segment(&self, segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<Self::Child> {
        self.deadline.check()?;
        self.inner.for_segment(segment, reader)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(&self, fruits: Vec<<Self::Child as SegmentCollector>::Fruit>) -> tantivy::Result<Self::Fruit> {
        self.inner.merge_fruits(fruits)
    }

    /// The documents of one segment, one by one, with a look at the clock
    /// every [`CHECK_EVERY`] of them (and once the scorer is built, which for
    /// a regex or a range is most of the work).
    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<<Self::Child as SegmentCollector>::Fruit> {
        let mut child = self.for_segment(segment, reader)?;
        let scoring = self.requires_scoring();
        let alive = reader.alive_bitset();
        let mut scorer = weight.scorer(reader, 1.0)?;
        self.deadline.check()?;
        let mut doc: DocId = scorer.doc();
        let mut since_check = 0;
        while doc != TERMINATED {
            if alive.is_none_or(|alive| alive.is_alive(doc)) {
                let score: Score = if scoring { scorer.score() } else { 0.0 };
                child.collect(doc, score);
            }
            since_check += 1;
            if since_check == CHECK_EVERY {
                since_check = 0;
                self.deadline.check()?;
            }
            doc = scorer.advance();
        }
        // A scorer that found nothing (or little) may still have worked long
        // inside `advance` (a phrase whose terms are in every document but
        // never in order): past the deadline, the search ends here too.
        self.deadline.check()?;
        Ok(child.harvest())
    }
}
