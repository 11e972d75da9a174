//! Reading the per-CPU maps: histograms summed over CPUs with deltas
//! against the previous read, the miss table of cgroups without a slot, and
//! the syscall → family table written at start-up.

use std::os::fd::AsFd as _;

use aya::Ebpf;
use aya::maps::{Array, Map, MapData};
use nodewatch_agent_ebpf::{
    BUCKETS, CGROUP_MISS_ENTRIES, GROUPING_POWER, MAX_SYSCALLS, MAX_VALUE_POWER,
};
use nodewatch_proto::daemon::error_chain as chain;
use nodewatch_proto::{hist, pb};

use super::batch::lookup;
use super::error::EbpfError;
use super::syscalls;

/// Words of one histogram as summed over CPUs: buckets then the error count.
const WORDS: usize = BUCKETS + 1;
/// Bytes of one `Hist` value.
const HIST_BYTES: usize = std::mem::size_of::<nodewatch_agent_ebpf::Hist>();

/// Reads a per-CPU `Hist` array with batched lookups, summing CPUs (wrapping).
pub(crate) struct PerCpuHists {
    map: MapData,
    entries: usize,
    cpus: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
    prev: Vec<u32>,
    cur: Vec<u32>,
}

impl PerCpuHists {
    pub(crate) fn new(map: MapData, entries: usize, cpus: usize) -> Self {
        Self {
            map,
            entries,
            cpus,
            keys: Vec::new(),
            values: Vec::new(),
            prev: vec![0; entries * WORDS],
            cur: vec![0; entries * WORDS],
        }
    }

    /// Reads the map; afterwards `delta(i)` gives element `i`'s change since the previous read.
    pub(crate) fn read(&mut self) -> std::io::Result<()> {
        std::mem::swap(&mut self.prev, &mut self.cur);
        let stride = HIST_BYTES.next_multiple_of(8);
        let n = lookup(
            self.map.fd().as_fd(),
            false,
            4,
            stride * self.cpus,
            self.entries,
            &mut self.keys,
            &mut self.values,
        )?;
        self.cur.iter_mut().for_each(|w| *w = 0);
        for e in 0..n {
            let key = u32::from_ne_bytes(self.keys[e * 4..e * 4 + 4].try_into().unwrap_or([0; 4]))
                as usize;
            if key >= self.entries {
                continue;
            }
            let dst = &mut self.cur[key * WORDS..(key + 1) * WORDS];
            for cpu in 0..self.cpus {
                let base = (e * self.cpus + cpu) * stride;
                let v = &self.values[base..base + HIST_BYTES];
                for (w, d) in dst.iter_mut().enumerate() {
                    let b = u32::from_ne_bytes(v[w * 4..w * 4 + 4].try_into().unwrap_or([0; 4]));
                    *d = d.wrapping_add(b);
                }
            }
        }
        Ok(())
    }

    /// Change of element `i` since the previous read: (bucket counts, total, errors).
    pub(crate) fn delta(&self, i: usize, out: &mut [u64; BUCKETS]) -> (u64, u64) {
        let cur = &self.cur[i * WORDS..(i + 1) * WORDS];
        let prev = &self.prev[i * WORDS..(i + 1) * WORDS];
        let mut total = 0u64;
        for b in 0..BUCKETS {
            let d = u64::from(cur[b].wrapping_sub(prev[b]));
            out[b] = d;
            total += d;
        }
        (total, u64::from(cur[BUCKETS].wrapping_sub(prev[BUCKETS])))
    }
}

// The kernel fills buckets in the wire layout of `nodewatch_proto::hist`.
const _: () = assert!(
    BUCKETS == hist::BUCKETS
        && GROUPING_POWER == hist::GROUPING_POWER
        && MAX_VALUE_POWER == hist::MAX_VALUE_POWER
);

/// The wire form of one histogram delta.
pub(crate) fn histogram(dense: &[u64; BUCKETS]) -> pb::Histogram {
    let s = hist::Sparse::from_dense(dense);
    pb::Histogram {
        grouping_power: GROUPING_POWER,
        max_value_power: MAX_VALUE_POWER,
        indices: s.indices,
        counts: s.counts,
    }
}

/// Takes map `name` out of the object.
pub(crate) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, EbpfError> {
    ebpf.take_map(name)
        .ok_or_else(|| EbpfError::Map(name, "missing from the object".into()))
}

/// The untyped map behind `map` (array and hash maps).
pub(crate) fn map_data(map: Map, name: &'static str) -> Result<MapData, EbpfError> {
    match map {
        Map::PerCpuArray(m) | Map::HashMap(m) | Map::Array(m) => Ok(m),
        other => Err(EbpfError::Map(name, format!("unexpected type {other:?}"))),
    }
}

/// Reads the per-CPU table of events of cgroups without a slot (entries of
/// (cgroup id, count), reused by other cgroups over time) into per-cgroup
/// deltas since the previous read.
pub(crate) struct MissCounts {
    map: MapData,
    cpus: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
    /// Previous contents per (entry, CPU): (cgroup, count).
    prev: Vec<(u64, u64)>,
}

impl MissCounts {
    pub(crate) fn new(map: MapData, cpus: usize) -> Self {
        Self {
            map,
            cpus,
            keys: Vec::new(),
            values: Vec::new(),
            prev: vec![(0, 0); CGROUP_MISS_ENTRIES as usize * cpus],
        }
    }

    /// Events per cgroup since the previous read, as (cgroup id, events).
    /// An entry taken over by another cgroup (or reset) counts whole.
    pub(crate) fn read(&mut self) -> std::io::Result<Vec<(u64, u64)>> {
        let n = lookup(
            self.map.fd().as_fd(),
            false,
            4,
            16 * self.cpus,
            CGROUP_MISS_ENTRIES as usize,
            &mut self.keys,
            &mut self.values,
        )?;
        let mut by_cgroup: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        for e in 0..n {
            let key = u32::from_ne_bytes(self.keys[e * 4..e * 4 + 4].try_into().unwrap_or([0; 4]))
                as usize;
            if key >= CGROUP_MISS_ENTRIES as usize {
                continue;
            }
            for cpu in 0..self.cpus {
                let base = (e * self.cpus + cpu) * 16;
                let word = |o: usize| {
                    u64::from_ne_bytes(
                        self.values[base + o..base + o + 8]
                            .try_into()
                            .unwrap_or([0; 8]),
                    )
                };
                let (cg, count) = (word(0), word(8));
                let prev = &mut self.prev[key * self.cpus + cpu];
                let delta = if prev.0 == cg && count >= prev.1 {
                    count - prev.1
                } else {
                    count
                };
                *prev = (cg, count);
                if cg != 0 && delta > 0 {
                    *by_cgroup.entry(cg).or_default() += delta;
                }
            }
        }
        Ok(by_cgroup.into_iter().collect())
    }
}

/// Fills the syscall number → family map of this architecture.
pub(crate) fn write_families(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    let map = ebpf
        .map_mut(nodewatch_agent_ebpf::MAP_FAMILY)
        .ok_or(EbpfError::Map(
            nodewatch_agent_ebpf::MAP_FAMILY,
            String::from("missing from the object"),
        ))?;
    let mut fam: Array<&mut MapData, u8> = Array::try_from(map)
        .map_err(|e| EbpfError::Map(nodewatch_agent_ebpf::MAP_FAMILY, chain(&e)))?;
    // Every entry is written: the map starts zeroed and 0 is a family ("io").
    let table = syscalls::table();
    for nr in 0..MAX_SYSCALLS {
        let f = table
            .get(nr as usize)
            .map_or(nodewatch_agent_ebpf::FAMILY_MISC, |name| {
                syscalls::family_of(name)
            });
        fam.set(nr, f, 0)
            .map_err(|e| EbpfError::Map(nodewatch_agent_ebpf::MAP_FAMILY, chain(&e)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_bucket_index_matches_the_wire_layout() {
        for i in 0..BUCKETS {
            for v in [hist::bucket_lower(i), hist::bucket_upper(i)] {
                assert_eq!(
                    nodewatch_agent_ebpf::bucket_index(v),
                    hist::bucket_index(v),
                    "v={v}"
                );
                assert_eq!(nodewatch_agent_ebpf::bucket_index(v), i, "v={v}");
            }
        }
        for v in [1u64 << 36, (1 << 40) + 7, u64::MAX] {
            assert_eq!(nodewatch_agent_ebpf::bucket_index(v), hist::bucket_index(v));
        }
    }
}
