//! Numeric compression of chunks.
//!
//! - Values: Gorilla XOR encoding (Pelkonen et al., VLDB 2015) streamed bit by bit
//!   while samples arrive, so the in-memory head is already compact. When a chunk
//!   closes and every value is an integer (byte counts, counters, states), it is
//!   re-encoded as delta-of-delta integers if that is smaller.
//! - Timestamps: one column per host and chunk (every series of a host shares the
//!   batch times), delta-of-delta encoded. A series chunk stores which entries of
//!   its host's time column it has values for, as runs.
//! - Histograms: per sample the non-empty buckets as (index delta, count) varints.

use super::StoreError;

/// Appends bits to a byte vector, most significant bit first.
#[derive(Debug, Clone, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = last byte full or no byte).
    used: u8,
}

impl BitWriter {
    /// Writes the low `n` bits of `v` (n <= 64).
    pub fn write(&mut self, v: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - u32::from(self.used);
            let take = free.min(left);
            let shift = left - take;
            let chunk = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            self.used = ((u32::from(self.used) + take) % 8) as u8;
            left -= take;
        }
    }

    /// Writes one bit.
    pub fn bit(&mut self, b: bool) {
        self.write(u64::from(b), 1);
    }

    /// Bytes written so far (the last one possibly partial).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Heap bytes held.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Reads bits written by [`BitWriter`].
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// Reads from `bytes`, starting at bit 0.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Reads `n` bits (n <= 64).
    pub fn read(&mut self, n: u32) -> Result<u64, StoreError> {
        if self.pos + n as usize > self.bytes.len() * 8 {
            return Err(StoreError::Corrupt("bit stream ends early"));
        }
        let mut v = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = self.bytes[self.pos / 8];
            let off = (self.pos % 8) as u32;
            let avail = 8 - off;
            let take = avail.min(left);
            let bits = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            v = if take == 64 { bits } else { (v << take) | bits };
            self.pos += take as usize;
            left -= take;
        }
        Ok(v)
    }

    /// Reads one bit.
    pub fn bit(&mut self) -> Result<bool, StoreError> {
        Ok(self.read(1)? == 1)
    }
}

/// Streaming Gorilla XOR encoder of f64 values.
#[derive(Debug, Clone, Default)]
pub struct XorEncoder {
    out: BitWriter,
    prev: u64,
    leading: u32,
    trailing: u32,
    count: u32,
}

impl XorEncoder {
    /// Appends a value.
    pub fn push(&mut self, v: f64) {
        let bits = v.to_bits();
        if self.count == 0 {
            self.out.write(bits, 64);
            self.leading = u32::MAX;
        } else {
            let x = bits ^ self.prev;
            if x == 0 {
                self.out.bit(false);
            } else {
                self.out.bit(true);
                let lead = x.leading_zeros().min(31);
                let trail = x.trailing_zeros();
                if self.leading != u32::MAX && lead >= self.leading && trail >= self.trailing {
                    self.out.bit(false);
                    let len = 64 - self.leading - self.trailing;
                    self.out.write(x >> self.trailing, len);
                } else {
                    self.out.bit(true);
                    let len = 64 - lead - trail;
                    self.out.write(u64::from(lead), 5);
                    // 64 meaningful bits are written as 0 (6 bits hold 0..=63).
                    self.out.write(u64::from(len % 64), 6);
                    self.out.write(x >> trail, len);
                    self.leading = lead;
                    self.trailing = trail;
                }
            }
        }
        self.prev = bits;
        self.count += 1;
    }

    /// Number of values pushed.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no value was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded stream.
    pub fn bytes(&self) -> &[u8] {
        self.out.bytes()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.out.capacity()
    }
}

/// Decodes `count` values written by [`XorEncoder`].
pub fn xor_decode(bytes: &[u8], count: usize, out: &mut Vec<f64>) -> Result<(), StoreError> {
    let mut r = BitReader::new(bytes);
    let mut prev = 0u64;
    let (mut leading, mut trailing) = (0u32, 0u32);
    for i in 0..count {
        if i == 0 {
            prev = r.read(64)?;
        } else if r.bit()? {
            if r.bit()? {
                leading = r.read(5)? as u32;
                let mut len = r.read(6)? as u32;
                if len == 0 {
                    len = 64;
                }
                if leading + len > 64 {
                    return Err(StoreError::Corrupt("xor window out of range"));
                }
                trailing = 64 - leading - len;
            }
            let len = 64 - leading - trailing;
            let x = r.read(len)? << trailing;
            prev ^= x;
        }
        out.push(f64::from_bits(prev));
    }
    Ok(())
}

/// Delta-of-delta bucket widths (value bits) after a 1..5 bit prefix; the last is the escape.
const DOD_BUCKETS: [u32; 4] = [7, 12, 20, 32];

/// Writes integers as delta-of-delta with Gorilla-style variable-width buckets.
pub fn dod_encode(values: impl IntoIterator<Item = i64>, out: &mut BitWriter) {
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for (i, v) in values.into_iter().enumerate() {
        if i == 0 {
            out.write(v as u64, 64);
        } else {
            let delta = v.wrapping_sub(prev);
            let dod = delta.wrapping_sub(prev_delta);
            if dod == 0 {
                out.bit(false);
            } else {
                let mut written = false;
                for (k, &w) in DOD_BUCKETS.iter().enumerate() {
                    let lim = 1i64 << (w - 1);
                    if dod >= -lim && dod < lim {
                        // Prefix: k+1 ones then a zero.
                        out.write((1u64 << (k + 2)) - 2, k as u32 + 2);
                        out.write(dod as u64 & ((1u64 << w) - 1), w);
                        written = true;
                        break;
                    }
                }
                if !written {
                    out.write(
                        (1u64 << (DOD_BUCKETS.len() + 1)) - 1,
                        DOD_BUCKETS.len() as u32 + 1,
                    );
                    out.write(dod as u64, 64);
                }
            }
            prev_delta = delta;
        }
        prev = v;
    }
}

/// Reads `count` integers written by [`dod_encode`].
pub fn dod_decode(
    r: &mut BitReader<'_>,
    count: usize,
    out: &mut Vec<i64>,
) -> Result<(), StoreError> {
    let (mut prev, mut prev_delta) = (0i64, 0i64);
    for i in 0..count {
        let v = if i == 0 {
            r.read(64)? as i64
        } else {
            let mut ones = 0usize;
            while ones <= DOD_BUCKETS.len() && r.bit()? {
                ones += 1;
            }
            let dod = if ones == 0 {
                0
            } else if ones <= DOD_BUCKETS.len() {
                let w = DOD_BUCKETS[ones - 1];
                let raw = r.read(w)?;
                // Sign-extend the w-bit value.
                ((raw << (64 - w)) as i64) >> (64 - w)
            } else {
                r.read(64)? as i64
            };
            let delta = prev_delta.wrapping_add(dod);
            prev_delta = delta;
            prev.wrapping_add(delta)
        };
        out.push(v);
        prev = v;
    }
    Ok(())
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, StoreError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or(StoreError::Corrupt("varint ends early"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(StoreError::Corrupt("varint too long"))
}

/// Largest magnitude at which every integer is exactly representable in f64.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// True when `v` is an integer that round-trips through i64 exactly.
pub fn is_exact_int(v: f64) -> bool {
    v.fract() == 0.0 && v.abs() <= EXACT_INT
}

/// Chunk codec tags (first byte of a stored chunk).
pub mod tag {
    /// Float values, Gorilla XOR.
    pub const XOR: u8 = 1;
    /// Integer values, delta-of-delta.
    pub const INT: u8 = 2;
    /// Histograms, sparse buckets.
    pub const HISTOGRAM: u8 = 3;
    /// A host's time column, delta-of-delta nanoseconds.
    pub const TIMES: u8 = 4;
}

/// Which entries of the host time column a series has, as (start, len) runs.
pub type Runs = Vec<(u32, u32)>;

/// Appends index `i` to `runs`.
pub fn runs_push(runs: &mut Runs, i: u32) {
    if let Some(last) = runs.last_mut()
        && last.0 + last.1 == i
    {
        last.1 += 1;
        return;
    }
    runs.push((i, 1));
}

/// Number of entries covered by `runs`.
pub fn runs_len(runs: &Runs) -> usize {
    runs.iter().map(|r| r.1 as usize).sum()
}

fn put_runs(out: &mut Vec<u8>, runs: &Runs) {
    put_varint(out, runs.len() as u64);
    let mut end = 0u32;
    for &(start, len) in runs {
        put_varint(out, u64::from(start - end));
        put_varint(out, u64::from(len));
        end = start + len;
    }
}

fn get_runs(buf: &[u8], pos: &mut usize) -> Result<Runs, StoreError> {
    let n = get_varint(buf, pos)? as usize;
    if n > buf.len() {
        return Err(StoreError::Corrupt("run count out of range"));
    }
    let mut runs = Vec::with_capacity(n);
    let mut end = 0u64;
    for _ in 0..n {
        let start = end + get_varint(buf, pos)?;
        let len = get_varint(buf, pos)?;
        end = start + len;
        if end > u64::from(u32::MAX) {
            return Err(StoreError::Corrupt("run out of range"));
        }
        runs.push((start as u32, len as u32));
    }
    Ok(runs)
}

/// Powers of ten tried when looking for a decimal scale.
const POW10: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

/// Smallest `k` such that every value is exactly `m / 10^k` for an integer `m`
/// below 2^53 (values read from /proc are mostly integers or centiseconds).
fn decimal_scale(values: &[f64]) -> Option<(u8, Vec<i64>)> {
    'scale: for (k, &p) in POW10.iter().enumerate() {
        let mut ints = Vec::with_capacity(values.len());
        for &v in values {
            let m = (v * p).round();
            if !is_exact_int(m) || (m / p).to_bits() != v.to_bits() {
                continue 'scale;
            }
            ints.push(m as i64);
        }
        return Some((k as u8, ints));
    }
    None
}

/// Encodes a closed scalar chunk: delta-of-delta integers of the values scaled by
/// a power of ten when that is exact and smaller, Gorilla XOR otherwise.
pub fn encode_scalar_chunk(runs: &Runs, xor: &XorEncoder) -> Vec<u8> {
    let mut out = Vec::with_capacity(xor.bytes().len() + 8);
    if xor.len() > 1 {
        let mut values = Vec::with_capacity(xor.len() as usize);
        if xor_decode(xor.bytes(), xor.len() as usize, &mut values).is_ok()
            && let Some((k, ints)) = decimal_scale(&values)
        {
            let mut w = BitWriter::default();
            dod_encode(ints, &mut w);
            if w.bytes().len() + 1 < xor.bytes().len() {
                out.push(tag::INT);
                put_runs(&mut out, runs);
                out.push(k);
                out.extend_from_slice(w.bytes());
                return out;
            }
        }
    }
    out.push(tag::XOR);
    put_runs(&mut out, runs);
    out.extend_from_slice(xor.bytes());
    out
}

/// Decodes a scalar chunk into its runs and values.
pub fn decode_scalar_chunk(buf: &[u8]) -> Result<(Runs, Vec<f64>), StoreError> {
    let tag = *buf.first().ok_or(StoreError::Corrupt("empty chunk"))?;
    let mut pos = 1;
    let runs = get_runs(buf, &mut pos)?;
    let n = runs_len(&runs);
    // Every value takes at least one bit: a larger count is corrupt (and must not
    // drive an allocation).
    if n > (buf.len() - pos) * 8 + 64 {
        return Err(StoreError::Corrupt("value count out of range"));
    }
    let mut values = Vec::with_capacity(n);
    match tag {
        tag::XOR => xor_decode(&buf[pos..], n, &mut values)?,
        tag::INT => {
            let k = *buf
                .get(pos)
                .ok_or(StoreError::Corrupt("chunk without scale"))?;
            let p = *POW10
                .get(k as usize)
                .ok_or(StoreError::Corrupt("decimal scale out of range"))?;
            let mut ints = Vec::with_capacity(n);
            dod_decode(&mut BitReader::new(&buf[pos + 1..]), n, &mut ints)?;
            values.extend(ints.into_iter().map(|v| v as f64 / p));
        }
        _ => return Err(StoreError::Corrupt("unknown scalar chunk codec")),
    }
    Ok((runs, values))
}

/// Encodes a host's time column.
pub fn encode_times(times: &[i64]) -> Vec<u8> {
    let mut out = vec![tag::TIMES];
    put_varint(&mut out, times.len() as u64);
    let mut w = BitWriter::default();
    dod_encode(times.iter().copied(), &mut w);
    out.extend_from_slice(w.bytes());
    out
}

/// Decodes a host's time column.
pub fn decode_times(buf: &[u8]) -> Result<Vec<i64>, StoreError> {
    if buf.first() != Some(&tag::TIMES) {
        return Err(StoreError::Corrupt("not a time column"));
    }
    let mut pos = 1;
    let n = get_varint(buf, &mut pos)? as usize;
    if n > buf.len() * 8 {
        return Err(StoreError::Corrupt("time count out of range"));
    }
    let mut out = Vec::with_capacity(n);
    dod_decode(&mut BitReader::new(&buf[pos..]), n, &mut out)?;
    Ok(out)
}

/// Histogram layout of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramLayout {
    /// Grouping power.
    pub grouping_power: u8,
    /// Largest value power.
    pub max_value_power: u8,
}

/// Appends one sparse histogram sample to an open histogram chunk body.
pub fn histogram_push(body: &mut Vec<u8>, indices: &[u32], counts: &[u64]) {
    let n = indices.len().min(counts.len());
    put_varint(body, n as u64);
    let mut prev = 0u32;
    for (i, (&idx, &c)) in indices.iter().zip(counts).take(n).enumerate() {
        let d = if i == 0 { idx } else { idx.wrapping_sub(prev) };
        put_varint(body, u64::from(d));
        put_varint(body, c);
        prev = idx;
    }
}

/// Encodes a closed histogram chunk.
pub fn encode_histogram_chunk(runs: &Runs, layout: HistogramLayout, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.push(tag::HISTOGRAM);
    out.push(layout.grouping_power);
    out.push(layout.max_value_power);
    put_runs(&mut out, runs);
    out.extend_from_slice(body);
    out
}

/// One decoded sparse histogram: (bucket index, count) pairs, ascending.
pub type SparseHistogram = Vec<(u32, u64)>;

/// Decodes `count` samples of a histogram chunk body.
pub fn decode_histogram_body(
    body: &[u8],
    count: usize,
) -> Result<Vec<SparseHistogram>, StoreError> {
    if count > body.len() {
        return Err(StoreError::Corrupt("histogram count out of range"));
    }
    let mut pos = 0;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = get_varint(body, &mut pos)? as usize;
        if n > body.len() {
            return Err(StoreError::Corrupt("bucket count out of range"));
        }
        let mut h = Vec::with_capacity(n);
        let mut prev = 0u64;
        for i in 0..n {
            let d = get_varint(body, &mut pos)?;
            let idx = if i == 0 { d } else { prev + d };
            let c = get_varint(body, &mut pos)?;
            h.push((idx as u32, c));
            prev = idx;
        }
        out.push(h);
    }
    Ok(out)
}

/// Decodes a closed histogram chunk.
pub fn decode_histogram_chunk(
    buf: &[u8],
) -> Result<(HistogramLayout, Runs, Vec<SparseHistogram>), StoreError> {
    if buf.len() < 3 || buf[0] != tag::HISTOGRAM {
        return Err(StoreError::Corrupt("not a histogram chunk"));
    }
    let layout = HistogramLayout {
        grouping_power: buf[1],
        max_value_power: buf[2],
    };
    let mut pos = 3;
    let runs = get_runs(buf, &mut pos)?;
    let hs = decode_histogram_body(&buf[pos..], runs_len(&runs))?;
    Ok((layout, runs, hs))
}

#[cfg(test)]
mod tests;
