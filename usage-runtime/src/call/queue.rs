//! The bounded queue between the hot path and the worker: one lock-free ring per core, so threads
//! calling tracked fns at once do not contend on one tail.
//!
//! A thread pushes to its own ring (assigned round-robin at its first push) and, only when that
//! ring is full, to the others, so the queue refuses a call only when every ring is full and its
//! capacity is exactly the configured one. The worker is the only consumer.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;

/// The most rings, whatever the core count.
const MAX_SHARDS: usize = 16;

/// Hands each thread its ring.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

pub(crate) struct Queue<T> {
    shards: Box<[ArrayQueue<T>]>,
    /// The ring the consumer pops from next: apart from `shards`, which every push reads.
    cursor: CachePadded<AtomicUsize>,
}

impl<T> Queue<T> {
    /// A queue of `capacity` (at least 1) slots over one ring per core (rounded down to a power
    /// of two, so a thread finds its ring without a division).
    pub(crate) fn new(capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_shards(capacity, cores)
    }

    pub(crate) fn with_shards(capacity: usize, shards: usize) -> Self {
        let capacity = capacity.max(1);
        let count = prev_power_of_two(shards.clamp(1, MAX_SHARDS).min(capacity));
        let shards = (0..count)
            .map(|i| ArrayQueue::new(capacity / count + usize::from(i < capacity % count)))
            .collect();
        Queue {
            shards,
            cursor: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Pushes `value`; on success returns the ring it went to, and whether that is this
    /// thread's own.
    #[inline]
    pub(crate) fn push(&self, value: T) -> Result<(usize, bool), T> {
        let own = self.own_ring();
        match self.shards[own].push(value) {
            Ok(()) => Ok((own, true)),
            Err(value) => self.push_elsewhere(own, value).map(|ring| (ring, false)),
        }
    }

    /// The ring this thread pushes to first.
    #[inline]
    fn own_ring(&self) -> usize {
        let count = self.shards.len();
        if count == 1 {
            0
        } else {
            own_shard() & (count - 1)
        }
    }

    /// How many wait in `ring` (reads the consumer's end too: not on every push).
    pub(crate) fn ring_len(&self, ring: usize) -> usize {
        self.shards[ring].len()
    }

    #[cold]
    fn push_elsewhere(&self, own: usize, mut value: T) -> Result<usize, T> {
        let count = self.shards.len();
        for step in 1..count {
            let index = (own + step) % count;
            match self.shards[index].push(value) {
                Ok(()) => return Ok(index),
                Err(back) => value = back,
            }
        }
        Err(value)
    }

    /// Pops from the ring the consumer is on, moving to the next when it is empty.
    pub(crate) fn pop(&self) -> Option<T> {
        let count = self.shards.len();
        let start = self.cursor.load(Ordering::Relaxed);
        for step in 0..count {
            let index = (start + step) % count;
            if let Some(value) = self.shards[index].pop() {
                if step != 0 {
                    self.cursor.store(index, Ordering::Relaxed);
                }
                return Some(value);
            }
        }
        None
    }

    /// How many calls wait in each ring now: what [`pop_within`](Self::pop_within) may take, so
    /// a drain takes exactly the calls that were waiting when it started, from every ring.
    pub(crate) fn waiting(&self) -> Vec<usize> {
        self.shards.iter().map(ArrayQueue::len).collect()
    }

    /// Pops a call counted in `left` (from [`waiting`](Self::waiting)), lowering its count; `None`
    /// once every count is zero. Only for the single consumer, for which counted calls stay put.
    pub(crate) fn pop_within(&self, left: &mut [usize]) -> Option<T> {
        for (ring, left) in self.shards.iter().zip(left.iter_mut()) {
            while *left > 0 {
                *left -= 1;
                if let Some(value) = ring.pop() {
                    return Some(value);
                }
            }
        }
        None
    }

    /// Calls waiting, across all rings.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(ArrayQueue::len).sum()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(ArrayQueue::capacity).sum()
    }
}

/// The largest power of two not above `n` (at least 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << n.max(1).ilog2()
}

fn own_shard() -> usize {
    SHARD.with(|shard| {
        let index = shard.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
        shard.set(index);
        index
    })
}

#[cfg(test)]
mod tests {
    use super::Queue;

    #[test]
    fn capacity_is_exact_whatever_the_split() {
        for (capacity, shards, rings) in [
            (10, 4, 4),
            (1, 8, 1),
            (7, 2, 2),
            (65_536, 16, 16),
            (3, 3, 2),
            (100, 12, 8),
        ] {
            let queue = Queue::with_shards(capacity, shards);
            assert_eq!(queue.capacity(), capacity);
            assert_eq!(queue.shard_count(), rings);
            for i in 0..capacity {
                assert!(queue.push(i).is_ok(), "slot {i} of {capacity} refused");
            }
            assert_eq!(queue.len(), capacity);
            assert_eq!(queue.push(usize::MAX), Err(usize::MAX));
            let mut popped: Vec<usize> = std::iter::from_fn(|| queue.pop()).collect();
            popped.sort_unstable();
            assert_eq!(popped, (0..capacity).collect::<Vec<_>>());
            assert_eq!(queue.len(), 0);
        }
    }

    #[test]
    fn a_drain_takes_what_was_waiting_and_nothing_newer() {
        let queue = Queue::with_shards(64, 2);
        // Fill both rings as two threads would.
        std::thread::scope(|scope| {
            scope.spawn(|| (0..5).for_each(|i| assert!(queue.push(i).is_ok())));
        });
        std::thread::scope(|scope| {
            scope.spawn(|| (5..8).for_each(|i| assert!(queue.push(i).is_ok())));
        });
        let mut left = queue.waiting();
        assert_eq!(left.iter().sum::<usize>(), 8);
        let mut taken = Vec::new();
        while let Some(value) = queue.pop_within(&mut left) {
            taken.push(value);
            // Calls arriving during the drain wait for the next one.
            queue.push(100 + value).unwrap();
        }
        taken.sort_unstable();
        assert_eq!(taken, (0..8).collect::<Vec<_>>());
        assert_eq!(queue.len(), 8);
    }

    #[test]
    fn one_thread_keeps_its_order_while_its_ring_has_room() {
        let queue = Queue::with_shards(64, 4);
        for i in 0..16 {
            queue.push(i).unwrap();
        }
        let popped: Vec<i32> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(popped, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn threads_pushing_at_once_lose_nothing() {
        let queue = Queue::with_shards(40_000, 4);
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let queue = &queue;
                scope.spawn(move || {
                    for i in 0..10_000u32 {
                        queue.push(t * 10_000 + i).unwrap();
                    }
                });
            }
        });
        let mut popped: Vec<u32> = std::iter::from_fn(|| queue.pop()).collect();
        popped.sort_unstable();
        assert_eq!(popped, (0..40_000).collect::<Vec<_>>());
    }
}
