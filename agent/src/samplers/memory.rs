//! Host memory: /proc/meminfo, /proc/vmstat (OOM kills, major faults, swap
//! traffic) and memory / I/O pressure.

use nodewatch_proto::pb;

use super::pressure::PressureFile;
use super::{Sampler, SamplerError};
use crate::sys::procfile::{ProcFile, fields, key_value, lines, parse_u64};

/// Fills the meminfo part of `out` (everything but vmstat and pressure).
/// Returns `None` when MemTotal is missing or a value does not parse.
pub(crate) fn parse_meminfo(content: &[u8], out: &mut pb::MemoryStats) -> Option<()> {
    let mut saw_total = false;
    let mut saw_available = false;
    for line in lines(content) {
        let (key, kib) = key_value(line)?;
        let bytes = kib.saturating_mul(1024);
        match key {
            b"MemTotal" => {
                out.total_bytes = bytes;
                saw_total = true;
            }
            b"MemFree" => out.free_bytes = bytes,
            b"MemAvailable" => {
                out.available_bytes = bytes;
                saw_available = true;
            }
            b"Buffers" => out.buffers_bytes = bytes,
            b"Cached" => out.cached_bytes = bytes,
            b"Dirty" => out.dirty_bytes = bytes,
            b"Writeback" => out.writeback_bytes = bytes,
            b"Shmem" => out.shmem_bytes = bytes,
            b"SReclaimable" => out.slab_reclaimable_bytes = bytes,
            b"SUnreclaim" => out.slab_unreclaimable_bytes = bytes,
            b"SwapTotal" => out.swap_total_bytes = bytes,
            b"SwapFree" => out.swap_free_bytes = bytes,
            _ => {}
        }
    }
    if !saw_total {
        return None;
    }
    if !saw_available {
        // Kernels before 3.14: the same rough estimate `free` falls back to.
        out.available_bytes = out.free_bytes + out.buffers_bytes + out.cached_bytes;
    }
    out.used_bytes = out.total_bytes.saturating_sub(out.available_bytes);
    Some(())
}

/// Fills the /proc/vmstat part of `out`. Counters the kernel does not have stay zero.
pub(crate) fn parse_vmstat(content: &[u8], out: &mut pb::MemoryStats) -> Option<()> {
    for line in lines(content) {
        let mut it = fields(line);
        let key = it.next()?;
        let slot = match key {
            b"oom_kill" => &mut out.oom_kills,
            b"pgmajfault" => &mut out.major_faults,
            b"pswpin" => &mut out.swap_in_pages,
            b"pswpout" => &mut out.swap_out_pages,
            _ => continue,
        };
        *slot = parse_u64(it.next()?)?;
    }
    Some(())
}

/// Samples host memory, paging counters and memory / I/O pressure.
#[derive(Debug)]
pub(crate) struct MemorySampler {
    meminfo: ProcFile,
    vmstat: ProcFile,
    memory_pressure: Option<PressureFile>,
    io_pressure: Option<PressureFile>,
}

impl MemorySampler {
    /// Opens /proc/meminfo, /proc/vmstat and the memory and io pressure files (when present).
    pub(crate) fn new() -> Result<Self, SamplerError> {
        Ok(Self {
            meminfo: ProcFile::open("/proc/meminfo")?,
            vmstat: ProcFile::open("/proc/vmstat")?,
            memory_pressure: PressureFile::open("memory"),
            io_pressure: PressureFile::open("io"),
        })
    }
}

impl Sampler for MemorySampler {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError> {
        let mut m = pb::MemoryStats::default();
        parse_meminfo(self.meminfo.read()?, &mut m).ok_or_else(|| SamplerError::Parse {
            path: self.meminfo.path().to_path_buf(),
            reason: "no MemTotal or a malformed line",
        })?;
        parse_vmstat(self.vmstat.read()?, &mut m).ok_or_else(|| SamplerError::Parse {
            path: self.vmstat.path().to_path_buf(),
            reason: "malformed line",
        })?;
        if let Some(p) = &mut self.memory_pressure {
            m.pressure = Some(p.read()?);
        }
        if let Some(p) = &mut self.io_pressure {
            m.io_pressure = Some(p.read()?);
        }
        batch.memory = Some(m);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_meminfo() {
        let mut m = pb::MemoryStats::default();
        parse_meminfo(include_bytes!("fixtures/meminfo"), &mut m).unwrap();
        assert_eq!(m.total_bytes, 24_683_656 * 1024);
        assert_eq!(m.free_bytes, 23_870_192 * 1024);
        assert_eq!(m.available_bytes, 24_330_644 * 1024);
        assert_eq!(m.buffers_bytes, 4664 * 1024);
        assert_eq!(m.cached_bytes, 627_136 * 1024);
        assert_eq!(m.dirty_bytes, 108 * 1024);
        assert_eq!(m.writeback_bytes, 0);
        assert_eq!(m.shmem_bytes, 8952 * 1024);
        assert_eq!(m.swap_total_bytes, 0);
        assert_eq!(m.used_bytes, (24_683_656 - 24_330_644) * 1024);
        assert!(m.slab_reclaimable_bytes > 0);
        assert!(m.slab_unreclaimable_bytes > 0);
    }

    #[test]
    fn parses_real_vmstat() {
        let mut m = pb::MemoryStats::default();
        parse_vmstat(include_bytes!("fixtures/vmstat"), &mut m).unwrap();
        assert_eq!(m.major_faults, 1595);
        assert_eq!(m.oom_kills, 0);
        assert_eq!(m.swap_in_pages, 0);
        parse_vmstat(b"pgfault 10\noom_kill 3\npswpout 7\n", &mut m).unwrap();
        assert_eq!(m.oom_kills, 3);
        assert_eq!(m.swap_out_pages, 7);
    }

    #[test]
    fn falls_back_without_memavailable() {
        let mut m = pb::MemoryStats::default();
        parse_meminfo(
            b"MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n",
            &mut m,
        )
        .unwrap();
        assert_eq!(m.available_bytes, 35 * 1024);
        assert_eq!(m.used_bytes, 65 * 1024);
    }

    #[test]
    fn rejects_garbage() {
        let mut m = pb::MemoryStats::default();
        assert!(parse_meminfo(b"MemFree: 10 kB\n", &mut m).is_none());
        assert!(parse_meminfo(b"MemTotal: ten kB\n", &mut m).is_none());
        assert!(parse_vmstat(b"oom_kill x\n", &mut m).is_none());
    }

    #[test]
    fn samples_this_host() {
        let mut s = MemorySampler::new().unwrap();
        let mut b = pb::Batch::default();
        s.sample(&mut b).unwrap();
        let m = b.memory.unwrap();
        assert!(m.total_bytes > 0 && m.available_bytes <= m.total_bytes);
    }
}
