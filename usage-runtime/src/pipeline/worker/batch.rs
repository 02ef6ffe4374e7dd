//! Making a batch: calls taken from the queue, records made with ids minted per batch, and what
//! they say of usage counted.

use super::*;

/// Records made between two polls of a write in flight.
pub(super) const PREFETCH_SLICE: usize = 256;

/// How often the worker looks at the queue while a write is in flight, to spill it to the spool
/// (with `Overflow::Spill`) before it fills.
pub(super) const SPILL_CHECK: Duration = Duration::from_millis(10);
/// How long a write must be in flight before the worker spills the queue meanwhile: a write
/// that takes longer is stuck, not busy (4,096 records take tens of milliseconds).
pub(super) const SPILL_AFTER: Duration = Duration::from_secs(1);

/// Counts what a record says of its usage: unpriced tokens, saturated counts.
pub(super) fn count_usage(shared: &Shared, record: &UsageRecord) {
    let counters = &shared.counters;
    if record.has_tokens() && record.cost_nano_usd.is_none() {
        counters.unpriced.fetch_add(1, Ordering::Relaxed);
    }
    if record
        .attributes
        .contains_key(crate::pipeline::record::SATURATED_ATTRIBUTE)
    {
        counters.saturated.fetch_add(1, Ordering::Relaxed);
    }
}

/// A drain's next batch and what it may still take: the calls counted as waiting when the drain
/// started, up to `budget`.
pub(super) struct Prefetch {
    pub(super) anchor: Anchor,
    pub(super) left: Vec<usize>,
    pub(super) budget: usize,
    pub(super) size: usize,
    pub(super) batch: Vec<UsageRecord>,
    /// Made during a write already (or spilled): not again before the drain takes it back.
    pub(super) filled: bool,
    pub(super) maker: Maker,
}

/// Mints the worker's record ids: UUIDv7 with the batch anchor's millisecond and, below it, a
/// 74-bit counter (RFC 9562's monotonic counter in `rand_a` and `rand_b`) started at a random
/// value, its top bit clear, at each new millisecond and counted up per id. The ids it mints are
/// unique and increasing for the life of the worker, without a clock read or a random draw per id
/// (the shared context behind `Uuid::now_v7`, which the rare records made elsewhere use, takes a
/// lock, reads the clock and draws per id).
///
/// It also keeps the last handled batch's vector, emptied, for the next batch: its memory is
/// mapped and likely cached, where a fresh one (a megabyte and more) faults its pages in as the
/// records are moved into it.
#[derive(Default)]
pub(super) struct Maker {
    pub(super) millis: u64,
    pub(super) counter: u128,
    /// Whether the counter was ever drawn (a clock at the epoch must not keep it at zero).
    pub(super) seeded: bool,
    pub(super) spare: Vec<UsageRecord>,
}

pub(super) const COUNTER_BITS: u32 = 74;
pub(super) const RAND_B_BITS: u32 = 62;

impl Maker {
    /// A batch anchored at `anchor` begins.
    pub(super) fn start(&mut self, anchor: &Anchor) {
        let millis = anchor.unix_millis() & ((1 << 48) - 1);
        // The same millisecond, or a clock stepped back, continues the count.
        if millis > self.millis || !self.seeded {
            self.millis = millis.max(self.millis);
            self.reseed();
        }
    }

    /// An empty batch with room for `size` records.
    pub(super) fn batch(&mut self, size: usize) -> Vec<UsageRecord> {
        let mut batch = std::mem::take(&mut self.spare);
        batch.reserve(size);
        batch
    }

    /// Keeps a handled batch's vector for the next batch.
    pub(super) fn recycle(&mut self, mut batch: Vec<UsageRecord>) {
        batch.clear();
        if batch.capacity() > self.spare.capacity() {
            self.spare = batch;
        }
    }

    pub(super) fn reseed(&mut self) {
        self.counter = uuid::Uuid::new_v4().as_u128() & ((1 << (COUNTER_BITS - 1)) - 1);
        self.seeded = true;
    }

    pub(super) fn id(&mut self) -> uuid::Uuid {
        let (millis, counter) = (self.millis, self.counter);
        self.counter += 1;
        if self.counter >> COUNTER_BITS != 0 {
            // Spent (after 2^73 ids in one millisecond at the least): the next millisecond.
            self.millis += 1;
            self.reseed();
        }
        let value = (u128::from(millis) << 80)
            | (0x7 << 76)
            | ((counter >> RAND_B_BITS) << 64)
            | (0b10 << 62)
            | (counter & ((1 << RAND_B_BITS) - 1));
        uuid::Uuid::from_u128(value)
    }

    pub(super) fn make(
        &mut self,
        call: RawCall,
        context: &RecordContext,
        anchor: &Anchor,
    ) -> UsageRecord {
        let id = self.id();
        call.into_record_with_id(context, anchor, id)
    }
}

impl Prefetch {
    /// Takes up to `most` calls into the batch, as records, while it has room and the budget
    /// lasts; whether there may be more to take.
    pub(super) fn fill(&mut self, shared: &Shared, context: &RecordContext, most: usize) -> bool {
        if self.batch.is_empty() {
            // Each batch's times and ids are anchored when it starts.
            self.anchor = Anchor::now();
            self.maker.start(&self.anchor);
        }
        for _ in 0..most {
            if self.batch.len() >= self.size || self.budget == 0 {
                return false;
            }
            let Some(call) = shared.queue.pop_within(&mut self.left) else {
                return false;
            };
            self.budget -= 1;
            shared.counters.taken.fetch_add(1, Ordering::Relaxed);
            let record = self.maker.make(call, context, &self.anchor);
            count_usage(shared, &record);
            self.batch.push(record);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{Anchor, Maker, COUNTER_BITS};

    pub(super) fn anchor(wall: &str) -> Anchor {
        Anchor::at(wall.parse().unwrap(), quanta::Instant::now())
    }

    pub(super) fn millis_of(id: uuid::Uuid) -> u64 {
        let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
        seconds * 1_000 + u64::from(nanos) / 1_000_000
    }

    #[test]
    pub(super) fn ids_are_version_7_at_the_batch_millisecond_and_always_increasing() {
        let mut maker = Maker::default();
        let first = anchor("2026-11-23T10:00:00.123456Z");
        let mut ids = Vec::new();
        maker.start(&first);
        ids.extend((0..5_000).map(|_| maker.id()));
        // Another batch in the same millisecond, then one after the clock stepped back: both
        // continue the count.
        maker.start(&first);
        ids.extend((0..10).map(|_| maker.id()));
        maker.start(&anchor("2026-11-23T09:59:59Z"));
        ids.extend((0..10).map(|_| maker.id()));
        let later = anchor("2026-11-23T10:00:01Z");
        maker.start(&later);
        let next = maker.id();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(millis_of(*id), first.unix_millis());
        }
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(millis_of(next), later.unix_millis());
        assert!(*ids.last().unwrap() < next);
    }

    #[test]
    pub(super) fn a_clock_at_the_epoch_still_gets_random_ids() {
        let epoch = anchor("1970-01-01T00:00:00Z");
        let first: Vec<_> = (0..2)
            .map(|_| {
                let mut maker = Maker::default();
                maker.start(&epoch);
                maker.id()
            })
            .collect();
        assert_ne!(first[0], first[1], "two workers drew the same counter");
        assert_eq!(millis_of(first[0]), 0);
    }

    #[test]
    pub(super) fn a_spent_counter_moves_to_the_next_millisecond() {
        let mut maker = Maker::default();
        let at = anchor("2026-11-23T10:00:00Z");
        maker.start(&at);
        maker.counter = (1 << COUNTER_BITS) - 2;
        let ids: Vec<_> = (0..3).map(|_| maker.id()).collect();
        assert_eq!(millis_of(ids[0]), at.unix_millis());
        assert_eq!(millis_of(ids[1]), at.unix_millis());
        assert_eq!(millis_of(ids[2]), at.unix_millis() + 1);
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        // The top bits of the counter are its first 12, in `rand_a`.
        assert_eq!(ids[1].as_u128() >> 64 & 0xfff, 0xfff);
    }
}
