//! A large batch as parts written at once over several connections, and the write's result from
//! the parts'.

use super::MIN_PART_RECORDS;
use crate::error::Error;
use crate::record::UsageRecord;

/// A batch as the parts written at once over `connections` connections: consecutive records in
/// parts of nearly equal length, one per [`MIN_PART_RECORDS`] the batch holds (at most
/// `connections`). A record repeated in a split batch is written
/// once (its first occurrence), so two parts never insert the same id and wait on each other.
pub(crate) struct Split<'a> {
    records: std::borrow::Cow<'a, [UsageRecord]>,
    part: usize,
}

impl<'a> Split<'a> {
    pub(crate) fn new(batch: &'a [UsageRecord], connections: usize) -> Self {
        if connections <= 1 || batch.len() < 2 * MIN_PART_RECORDS {
            return Split {
                records: std::borrow::Cow::Borrowed(batch),
                part: batch.len().max(1),
            };
        }
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        let records = if batch.iter().all(|record| seen.insert(record.id)) {
            std::borrow::Cow::Borrowed(batch)
        } else {
            seen.clear();
            std::borrow::Cow::Owned(
                batch
                    .iter()
                    .filter(|record| seen.insert(record.id))
                    .cloned()
                    .collect(),
            )
        };
        let parts = (records.len() / MIN_PART_RECORDS).clamp(1, connections);
        let part = records.len().div_ceil(parts).max(1);
        Split { records, part }
    }

    pub(crate) fn parts(&self) -> std::slice::Chunks<'_, UsageRecord> {
        self.records.chunks(self.part)
    }

    /// The write's result from each part's, in part order: `Ok` when every part committed; the
    /// first failed part's error when none did; else [`Error::PartlyWritten`] naming the records
    /// committed, so the worker goes on with the rest alone and counts each record once.
    pub(crate) fn settle(&self, results: Vec<Result<(), Error>>) -> Result<(), Error> {
        let mut written = Vec::new();
        let mut failed = None;
        for (part, result) in self.parts().zip(results) {
            match result {
                Ok(()) => written.extend(part.iter().map(|record| record.id)),
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            None => Ok(()),
            Some(error) if written.is_empty() => Err(error),
            Some(error) => Err(Error::PartlyWritten {
                written: crate::error::RecordIds(written),
                source: Box::new(error),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` records with distinct ids: all a split looks at.
    fn records(count: usize) -> Vec<UsageRecord> {
        (0..count).map(|_| crate::sink::probe_record()).collect()
    }

    #[test]
    fn batches_split_into_nearly_equal_parts() {
        let lengths = |count: usize, connections: usize| -> Vec<usize> {
            let batch = records(count);
            let split = Split::new(&batch, connections);
            let parts: Vec<&[UsageRecord]> = split.parts().collect();
            // The parts are the batch, in order.
            let ids: Vec<uuid::Uuid> = parts.iter().flat_map(|p| p.iter().map(|r| r.id)).collect();
            assert_eq!(ids, batch.iter().map(|r| r.id).collect::<Vec<_>>());
            parts.iter().map(|part| part.len()).collect()
        };
        assert_eq!(lengths(0, 4), Vec::<usize>::new());
        assert_eq!(lengths(5, 4), vec![5]);
        assert_eq!(
            lengths(2 * MIN_PART_RECORDS - 1, 4),
            vec![2 * MIN_PART_RECORDS - 1]
        );
        assert_eq!(lengths(2 * MIN_PART_RECORDS, 4), vec![MIN_PART_RECORDS; 2]);
        assert_eq!(lengths(4096, 4), vec![1024; 4]);
        assert_eq!(lengths(4097, 4), vec![1025, 1025, 1025, 1022]);
        assert_eq!(lengths(10_000, 4), vec![2500; 4]);
        assert_eq!(lengths(10_000, 1), vec![10_000]);
    }

    #[test]
    fn a_split_batch_writes_a_repeated_record_once() {
        let mut batch = records(3000);
        batch[2500] = batch[10].clone();
        batch[2999] = batch[10].clone();
        let split = Split::new(&batch, 4);
        let parts: Vec<&[UsageRecord]> = split.parts().collect();
        // 2,998 distinct records: two parts (the count is taken after the repeats are gone).
        assert_eq!(parts.len(), 2);
        let ids: Vec<uuid::Uuid> = parts.iter().flat_map(|p| p.iter().map(|r| r.id)).collect();
        assert_eq!(ids.len(), 2998);
        assert_eq!(ids.iter().filter(|id| **id == batch[10].id).count(), 1);
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        // Unsplit, a batch goes as it is: the sink counts a repeat once by itself.
        let small = &batch[..MIN_PART_RECORDS];
        assert_eq!(
            Split::new(small, 4).parts().next().unwrap().len(),
            small.len()
        );
    }
}
