//! The latency histogram of a rollup row: log-linear buckets and their byte encoding, which a
//! concatenation adds to (so an upsert appends) and compaction brings back to canonical form.

use std::collections::BTreeMap;
use std::fmt;

/// Mantissa bits of the log-linear latency buckets: each bucket spans at most 1/32 of its lower
/// bound, so a percentile read from the histogram is within about 3% of the true value.
const MANTISSA_BITS: u32 = 5;
const LINEAR: u64 = 1 << MANTISSA_BITS;

/// How many latency buckets there are (the last one holds `u64::MAX`).
pub(crate) const BUCKETS: usize = 1 + 32 + 58 * 32 + 31;

/// The histogram bucket of a duration in microseconds: exact below 32 µs, then 32 buckets per
/// power of two.
pub fn latency_bucket(duration_us: u64) -> u32 {
    if duration_us < LINEAR {
        return duration_us as u32;
    }
    let exponent = 63 - duration_us.leading_zeros(); // >= MANTISSA_BITS
    let shift = exponent - MANTISSA_BITS;
    let mantissa = (duration_us >> shift) & (LINEAR - 1);
    (LINEAR as u32) + shift * (LINEAR as u32) + mantissa as u32
}

/// The smallest duration (µs) in `bucket` (`u64::MAX` past the last bucket).
pub fn bucket_lower_bound(bucket: u32) -> u64 {
    let bucket = u64::from(bucket);
    if bucket < LINEAR {
        return bucket;
    }
    let shift = (bucket - LINEAR) / LINEAR;
    let mantissa = (bucket - LINEAR) % LINEAR;
    u64::try_from(u128::from(LINEAR + mantissa) << shift).unwrap_or(u64::MAX)
}

/// A representative duration (µs) for `bucket`: the middle of its range.
pub fn bucket_midpoint(bucket: u32) -> u64 {
    let low = bucket_lower_bound(bucket);
    let high = bucket_lower_bound(bucket + 1);
    low + (high - low) / 2
}

/// The latency histogram of a rollup row: calls per bucket.
pub(crate) type Histogram = BTreeMap<u32, u64>;

/// A `latency` column that is not a histogram this version wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyDecodeError {
    at: usize,
}

impl fmt::Display for LatencyDecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a rollup latency histogram is malformed at byte {}",
            self.at
        )
    }
}

impl std::error::Error for LatencyDecodeError {}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[inline]
fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, LatencyDecodeError> {
    // Most values fit one byte.
    if let Some(&byte) = bytes.get(*at) {
        if byte < 0x80 {
            *at += 1;
            return Ok(u64::from(byte));
        }
    }
    let start = *at;
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = bytes.get(*at) else {
            return Err(LatencyDecodeError { at: start });
        };
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(LatencyDecodeError { at: start })
}

/// The `latency` column of a rollup row: for each non-empty bucket in ascending order, the
/// bucket and the calls in it, both as LEB128 varints. An empty (or `NULL`) column is an empty
/// histogram, and two encodings one after the other are the encoding of their sum (a bucket may
/// then appear more than once), so a database can add histograms up by concatenating them.
pub fn encode_latency(histogram: impl IntoIterator<Item = (u32, u64)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (bucket, calls) in histogram {
        if calls == 0 {
            continue;
        }
        push_varint(&mut out, u64::from(bucket));
        push_varint(&mut out, calls);
    }
    out
}

/// Calls `each(bucket, calls)` for every entry of an encoded histogram (see
/// [`encode_latency`]): in ascending bucket order for what one encoding wrote, a bucket possibly
/// repeated for concatenated ones.
pub fn decode_latency(
    bytes: &[u8],
    mut each: impl FnMut(u32, u64),
) -> Result<(), LatencyDecodeError> {
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let bucket = read_varint(bytes, &mut at)?;
        let calls = read_varint(bytes, &mut at)?;
        let bucket = u32::try_from(bucket)
            .ok()
            .filter(|bucket| *bucket <= latency_bucket(u64::MAX))
            .ok_or(LatencyDecodeError { at: start })?;
        each(bucket, calls);
    }
    Ok(())
}

/// Writers append each batch's histogram to a row's `latency` (a concatenation is a sum), and
/// `latency_base` holds the length the column had when it was last written in canonical form
/// (each bucket once). A column grown past a quarter longer than that, plus 64 bytes, is
/// rewritten in canonical form by the writer that sees it, under the row's lock: so a histogram
/// is stored in at most about 1.25 times its canonical size (reports read it whole), and a row is
/// rewritten only every so many batches. `length` is the SQL expression of the column's current length.
pub(crate) fn compact_when(length: &str) -> String {
    format!("{length} > latency_base + latency_base / 4 + 64")
}

/// What a stored histogram is rewritten to: its canonical form, or (with a warning) itself when
/// it does not decode, so that its `latency_base` moves on and it is not read back on every
/// write; reports over its key name the problem.
pub(crate) fn compacted(stored: &[u8], table: &str) -> Vec<u8> {
    match compact_latency(stored) {
        Ok(compact) => compact,
        Err(error) => {
            tracing::warn!(table, %error, "a rollup histogram does not decode; left as it is");
            stored.to_vec()
        }
    }
}

/// An encoded histogram (possibly with repeated buckets) in canonical form.
pub(crate) fn compact_latency(stored: &[u8]) -> Result<Vec<u8>, LatencyDecodeError> {
    let mut histogram = Histogram::new();
    decode_latency(stored, |bucket, calls| {
        let slot = histogram.entry(bucket).or_default();
        *slot = slot.saturating_add(calls);
    })?;
    Ok(encode_latency(histogram))
}
