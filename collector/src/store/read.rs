//! The read API: host resolution, series lookup by metric and labels, and
//! samples of one series over a range from the head and the stored chunks.

use redb::{ReadableDatabase as _, ReadableTable as _};

use super::codec::{self, HistogramLayout, Runs, SparseHistogram};
use super::head::{Body, OpenSeries};
use super::schema::{self, BACKFILL, CHUNKS, GENERATIONS, TIMES_SID};
use super::{LabelMatch, SeriesRef, Store, StoreError, db};
use crate::hosts::{ResolveError, resolve_host};

impl Store {
    /// Resolves a host id, hostname or unique prefix of either to a host id,
    /// among the hosts the store knows.
    pub fn resolve_host(&self, name: &str) -> Result<String, ResolveError> {
        let head = self.lock();
        resolve_host(
            name,
            head.hosts.iter().map(|(id, h)| {
                let hostname = h
                    .hello
                    .as_ref()
                    .and_then(|x| x.host.as_ref())
                    .map_or("", |x| x.hostname.as_str());
                (id.as_str(), hostname)
            }),
        )
    }

    /// Series of `host_id` named `metric` (every metric when empty) matching all `matchers`.
    pub fn find_series(
        &self,
        host_id: &str,
        metric: &str,
        matchers: &[LabelMatch],
        limit: usize,
    ) -> Vec<SeriesRef> {
        let head = self.lock();
        let Some(h) = head.hosts.get(host_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (sid, s) in h.series.iter().enumerate() {
            let (m, labels) = crate::metrics::parse_key(&s.key);
            if s.key.is_empty()
                || (!metric.is_empty() && m != metric)
                || !matchers.iter().all(|x| x.matches(&labels))
            {
                continue;
            }
            out.push(SeriesRef {
                sid: sid as u32,
                key: s.key.clone(),
                kind: s.kind,
            });
            if out.len() >= limit {
                break;
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Scalar samples of one series in `[start, end]`, time-ordered.
    pub fn read_scalar(
        &self,
        host_id: &str,
        sid: u32,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let mut out = Vec::new();
        self.read_chunks(host_id, sid, start, end, |times, chunk| {
            let (runs, values) = match chunk {
                ChunkRef::Scalar(runs, values) => (runs, values),
                ChunkRef::Bytes(b) => {
                    let (r, v) = codec::decode_scalar_chunk(b)?;
                    return push_scalar(times, &r, &v, start, end, &mut out);
                }
                ChunkRef::Histogram(..) => return Ok(()),
            };
            push_scalar(times, runs, values, start, end, &mut out)
        })?;
        dedup_sorted(&mut out);
        Ok(out)
    }

    /// Histogram samples of one series in `[start, end]`, time-ordered, with the
    /// grouping power of each.
    pub fn read_histograms(
        &self,
        host_id: &str,
        sid: u32,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, u8, SparseHistogram)>, StoreError> {
        let mut out = Vec::new();
        self.read_chunks(host_id, sid, start, end, |times, chunk| {
            let owned;
            let (layout, runs, hs) = match chunk {
                ChunkRef::Histogram(l, r, h) => (*l, r, h),
                ChunkRef::Bytes(b) => {
                    owned = codec::decode_histogram_chunk(b)?;
                    (owned.0, &owned.1, &owned.2)
                }
                ChunkRef::Scalar(..) => return Ok(()),
            };
            let mut k = 0;
            for &(s, len) in runs {
                for i in s..s + len {
                    let t = *times
                        .get(i as usize)
                        .ok_or(StoreError::Corrupt("run beyond time column"))?;
                    if t >= start && t <= end {
                        out.push((t, layout.grouping_power, hs[k].clone()));
                    }
                    k += 1;
                }
            }
            Ok(())
        })?;
        out.sort_by_key(|x| x.0);
        out.dedup_by_key(|x| x.0);
        Ok(out)
    }

    /// Visits the head chunk and every stored chunk of one series overlapping `[start, end]`.
    fn read_chunks(
        &self,
        host_id: &str,
        sid: u32,
        start: i64,
        end: i64,
        mut visit: impl FnMut(&[i64], &ChunkRef<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Head first, then the database: a cut committing in between shows up twice
        // (removed by the caller's de-duplication), never zero times.
        let (no, head_part) = {
            let head = self.lock();
            let Some(h) = head.hosts.get(host_id) else {
                return Ok(());
            };
            let overlaps = |times: &[i64]| matches!((times.first(), times.last()), (Some(&f), Some(&l)) if f <= end && l >= start);
            let mut part = Vec::new();
            if let Some(open) = h.series.get(sid as usize).and_then(|s| s.open.as_ref())
                && overlaps(&h.times)
            {
                part.push((h.times.clone(), open_snapshot(open)));
            }
            for lane in &h.backfill {
                if let Some(Some(open)) = lane.open.get(&sid)
                    && overlaps(&lane.times)
                {
                    part.push((lane.times.clone(), open_snapshot(open)));
                }
            }
            (h.no, part)
        };
        let mut chunks: Vec<(Vec<i64>, Vec<u8>)> = Vec::new();
        {
            let tx = self.shared.db.begin_read().map_err(db("begin read"))?;
            let gens = match tx.open_table(GENERATIONS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return finish(head_part, &mut visit);
                }
                Err(e) => return Err(db("open generations")(e)),
            };
            let table = tx.open_table(CHUNKS).map_err(db("open chunks"))?;
            let backfill = match tx.open_table(BACKFILL) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(db("open backfill")(e)),
            };
            for g in gens.iter().map_err(db("scan generations"))? {
                let (g, span) = g.map_err(db("scan generations"))?;
                let (first, last) = span.value();
                if last < start || first > end {
                    continue;
                }
                let g = g.value();
                let lanes = match &backfill {
                    Some(t) => t
                        .get((g, no))
                        .map_err(db("read backfill lanes"))?
                        .map_or(0, |v| v.value() as usize),
                    None => 0,
                };
                for lane in 0..=lanes {
                    let key = schema::lane_key(no, lane);
                    let Some(c) = table.get((g, key, sid)).map_err(db("read chunk"))? else {
                        continue;
                    };
                    let c = c.value().to_vec();
                    let times = table
                        .get((g, key, TIMES_SID))
                        .map_err(db("read time column"))?
                        .ok_or(StoreError::Corrupt("chunk without time column"))?;
                    let times = codec::decode_times(times.value())?;
                    chunks.push((times, c));
                }
            }
        }
        for (times, c) in &chunks {
            visit(times, &ChunkRef::Bytes(c))?;
        }
        finish(head_part, &mut visit)
    }
}

fn finish(
    head_part: Vec<(Vec<i64>, ChunkRef<'static>)>,
    visit: &mut impl FnMut(&[i64], &ChunkRef<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for (times, c) in &head_part {
        visit(times, c)?;
    }
    Ok(())
}

/// A chunk handed to a reader.
enum ChunkRef<'a> {
    Bytes(&'a [u8]),
    Scalar(Runs, Vec<f64>),
    Histogram(HistogramLayout, Runs, Vec<SparseHistogram>),
}

fn open_snapshot(open: &OpenSeries) -> ChunkRef<'static> {
    match &open.body {
        Body::Scalar { xor, .. } => {
            let mut v = Vec::with_capacity(xor.len() as usize);
            // The head encoder is written by this process: decoding cannot fail short
            // of memory corruption; an error leaves the values empty.
            let _ = codec::xor_decode(xor.bytes(), xor.len() as usize, &mut v);
            ChunkRef::Scalar(open.runs.clone(), v)
        }
        Body::Histogram { layout, body } => {
            let n = codec::runs_len(&open.runs);
            let hs = codec::decode_histogram_body(body, n).unwrap_or_default();
            ChunkRef::Histogram(*layout, open.runs.clone(), hs)
        }
    }
}

fn push_scalar(
    times: &[i64],
    runs: &Runs,
    values: &[f64],
    start: i64,
    end: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), StoreError> {
    let mut k = 0;
    for &(s, len) in runs {
        for i in s..s + len {
            let t = *times
                .get(i as usize)
                .ok_or(StoreError::Corrupt("run beyond time column"))?;
            let v = *values
                .get(k)
                .ok_or(StoreError::Corrupt("fewer values than runs"))?;
            if t >= start && t <= end {
                out.push((t, v));
            }
            k += 1;
        }
    }
    Ok(())
}

fn dedup_sorted(v: &mut Vec<(i64, f64)>) {
    v.sort_by_key(|x| x.0);
    v.dedup_by_key(|x| x.0);
}
