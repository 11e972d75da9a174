//! Host CPU: /proc/stat (per-CPU and total times, context switches, forks,
//! runnable and blocked tasks, interrupts), /proc/loadavg and CPU pressure.

use nodewatch_proto::pb;

use super::pressure::PressureFile;
use super::{Sampler, SamplerError};
use crate::sys::procfile::{ProcFile, fields, lines, parse_f64, parse_u64};
use crate::sys::sysconf::ticks_per_second;

/// Ticks of one CPU line of /proc/stat, in the kernel's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    /// CPU index, -1 for the `cpu` total line.
    pub(crate) cpu: i32,
    /// user, nice, system, idle, iowait, irq, softirq, steal.
    pub(crate) ticks: [u64; 8],
}

impl CpuTicks {
    fn total(&self) -> u64 {
        self.ticks.iter().sum()
    }
    fn idle(&self) -> u64 {
        self.ticks[3] + self.ticks[4]
    }
}

/// Everything parsed from one read of /proc/stat.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProcStat {
    /// The total line (cpu = -1).
    pub(crate) total: CpuTicks,
    /// One entry per `cpuN` line.
    pub(crate) per_cpu: Vec<CpuTicks>,
    /// `ctxt`.
    pub(crate) context_switches: u64,
    /// `processes`.
    pub(crate) forks: u64,
    /// `procs_running`.
    pub(crate) procs_running: u32,
    /// `procs_blocked`.
    pub(crate) procs_blocked: u32,
    /// First number of the `intr` line.
    pub(crate) interrupts: u64,
}

/// Parses /proc/stat into `out`, reusing its per-CPU vector.
pub(crate) fn parse_proc_stat(content: &[u8], out: &mut ProcStat) -> Option<()> {
    out.per_cpu.clear();
    let mut saw_total = false;
    for line in lines(content) {
        let mut it = fields(line);
        let key = it.next()?;
        if let Some(index) = key.strip_prefix(b"cpu") {
            let cpu = if index.is_empty() {
                -1
            } else {
                i32::try_from(parse_u64(index)?).ok()?
            };
            let mut ticks = [0u64; 8];
            // Older kernels have fewer columns; missing ones stay zero.
            for (slot, value) in ticks.iter_mut().zip(it.by_ref()) {
                *slot = parse_u64(value)?;
            }
            let line = CpuTicks { cpu, ticks };
            if cpu < 0 {
                out.total = line;
                saw_total = true;
            } else {
                out.per_cpu.push(line);
            }
            continue;
        }
        let value = it.next();
        match key {
            b"ctxt" => out.context_switches = parse_u64(value?)?,
            b"processes" => out.forks = parse_u64(value?)?,
            b"procs_running" => out.procs_running = u32::try_from(parse_u64(value?)?).ok()?,
            b"procs_blocked" => out.procs_blocked = u32::try_from(parse_u64(value?)?).ok()?,
            b"intr" => out.interrupts = parse_u64(value?)?,
            _ => {}
        }
    }
    saw_total.then_some(())
}

/// Parses /proc/loadavg into (load1, load5, load15).
pub(crate) fn parse_loadavg(content: &[u8]) -> Option<(f64, f64, f64)> {
    let mut it = fields(content);
    Some((
        parse_f64(it.next()?)?,
        parse_f64(it.next()?)?,
        parse_f64(it.next()?)?,
    ))
}

/// Busy share between two samples of one CPU line, 0..1 (0 without a previous sample
/// or when the counters did not move or went backwards, e.g. a CPU came back online).
pub(crate) fn busy_ratio(prev: Option<&CpuTicks>, now: &CpuTicks) -> f64 {
    let Some(prev) = prev else { return 0.0 };
    let total = now.total().saturating_sub(prev.total());
    let idle = now.idle().saturating_sub(prev.idle());
    if total == 0 || now.total() < prev.total() {
        return 0.0;
    }
    (total.saturating_sub(idle) as f64 / total as f64).clamp(0.0, 1.0)
}

/// Converts ticks to the wire form.
pub(crate) fn cpu_times(
    now: &CpuTicks,
    prev: Option<&CpuTicks>,
    ticks_per_second: f64,
) -> pb::CpuTimes {
    let s = |i: usize| now.ticks[i] as f64 / ticks_per_second;
    pb::CpuTimes {
        cpu: now.cpu,
        user_seconds: s(0),
        nice_seconds: s(1),
        system_seconds: s(2),
        idle_seconds: s(3),
        iowait_seconds: s(4),
        irq_seconds: s(5),
        softirq_seconds: s(6),
        steal_seconds: s(7),
        busy_ratio: busy_ratio(prev, now),
    }
}

/// Samples host CPU; `busy_ratio` comes from the delta against the previous
/// pass's /proc/stat.
#[derive(Debug)]
pub(crate) struct CpuSampler {
    stat: ProcFile,
    loadavg: ProcFile,
    pressure: Option<PressureFile>,
    hz: f64,
    current: ProcStat,
    previous: Option<ProcStat>,
}

impl CpuSampler {
    /// Opens /proc/stat, /proc/loadavg and /proc/pressure/cpu (when present).
    pub(crate) fn new() -> Result<Self, SamplerError> {
        let mut stat = ProcFile::open("/proc/stat")?;
        let mut probe = ProcStat::default();
        parse_proc_stat(stat.read()?, &mut probe).ok_or_else(|| SamplerError::Parse {
            path: stat.path().to_path_buf(),
            reason: "no cpu line",
        })?;
        Ok(Self {
            stat,
            loadavg: ProcFile::open("/proc/loadavg")?,
            pressure: PressureFile::open("cpu"),
            hz: ticks_per_second(),
            current: ProcStat::default(),
            previous: None,
        })
    }
}

impl Sampler for CpuSampler {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError> {
        let content = self.stat.read()?;
        parse_proc_stat(content, &mut self.current).ok_or_else(|| SamplerError::Parse {
            path: self.stat.path().to_path_buf(),
            reason: "unexpected line",
        })?;
        let load = self.loadavg.read()?;
        let (load1, load5, load15) = parse_loadavg(load).ok_or_else(|| SamplerError::Parse {
            path: self.loadavg.path().to_path_buf(),
            reason: "expected three load averages",
        })?;
        let pressure = match &mut self.pressure {
            Some(p) => Some(p.read()?),
            None => None,
        };

        let prev = self.previous.as_ref();
        let cur = &self.current;
        let per_cpu = cur
            .per_cpu
            .iter()
            .map(|c| {
                let p = prev.and_then(|p| p.per_cpu.iter().find(|x| x.cpu == c.cpu));
                cpu_times(c, p, self.hz)
            })
            .collect();
        batch.cpu = Some(pb::CpuStats {
            total: Some(cpu_times(&cur.total, prev.map(|p| &p.total), self.hz)),
            per_cpu,
            load1,
            load5,
            load15,
            context_switches: cur.context_switches,
            forks: cur.forks,
            procs_running: cur.procs_running,
            procs_blocked: cur.procs_blocked,
            pressure,
            interrupts: cur.interrupts,
        });
        // Keep the parsed sample as the next delta base; reuse the old vector.
        match &mut self.previous {
            Some(p) => std::mem::swap(p, &mut self.current),
            None => self.previous = Some(std::mem::take(&mut self.current)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &[u8] = include_bytes!("fixtures/proc_stat");

    #[test]
    fn parses_real_proc_stat() {
        let mut s = ProcStat::default();
        parse_proc_stat(STAT, &mut s).unwrap();
        assert_eq!(
            s.total,
            CpuTicks {
                cpu: -1,
                ticks: [40568, 0, 7379, 80019, 700, 0, 142, 449]
            }
        );
        assert_eq!(s.per_cpu.len(), 2);
        assert_eq!(s.per_cpu[1].cpu, 1);
        assert_eq!(
            s.per_cpu[1].ticks,
            [21096, 0, 4060, 38532, 576, 0, 108, 255]
        );
        assert_eq!(s.context_switches, 382_713);
        assert_eq!(s.forks, 8737);
        assert_eq!(s.procs_running, 1);
        assert_eq!(s.procs_blocked, 0);
        assert_eq!(s.interrupts, 296_272);
    }

    #[test]
    fn converts_ticks_to_seconds() {
        let mut s = ProcStat::default();
        parse_proc_stat(STAT, &mut s).unwrap();
        let t = cpu_times(&s.total, None, 100.0);
        assert_eq!(t.cpu, -1);
        assert_eq!(t.user_seconds, 405.68);
        assert_eq!(t.system_seconds, 73.79);
        assert_eq!(t.idle_seconds, 800.19);
        assert_eq!(t.iowait_seconds, 7.0);
        assert_eq!(t.softirq_seconds, 1.42);
        assert_eq!(t.steal_seconds, 4.49);
        assert_eq!(t.busy_ratio, 0.0, "no previous sample");
    }

    #[test]
    fn busy_ratio_from_deltas() {
        let prev = CpuTicks {
            cpu: 0,
            ticks: [100, 0, 50, 800, 50, 0, 0, 0],
        };
        // +30 user, +10 system, +50 idle, +10 iowait: busy 40 of 100.
        let now = CpuTicks {
            cpu: 0,
            ticks: [130, 0, 60, 850, 60, 0, 0, 0],
        };
        assert!((busy_ratio(Some(&prev), &now) - 0.4).abs() < 1e-12);
        assert_eq!(busy_ratio(Some(&now), &now), 0.0, "no time passed");
        assert_eq!(
            busy_ratio(Some(&now), &prev),
            0.0,
            "counters went backwards"
        );
    }

    #[test]
    fn old_kernel_with_fewer_columns() {
        let mut s = ProcStat::default();
        parse_proc_stat(b"cpu 1 2 3 4\ncpu0 1 2 3 4\nctxt 9\n", &mut s).unwrap();
        assert_eq!(s.total.ticks, [1, 2, 3, 4, 0, 0, 0, 0]);
        assert_eq!(s.context_switches, 9);
    }

    #[test]
    fn rejects_garbage() {
        let mut s = ProcStat::default();
        assert!(parse_proc_stat(b"cpu x y\n", &mut s).is_none());
        assert!(
            parse_proc_stat(b"ctxt 5\n", &mut s).is_none(),
            "no total line"
        );
        assert!(parse_loadavg(b"0.1 0.2").is_none());
    }

    #[test]
    fn parses_real_loadavg() {
        assert_eq!(
            parse_loadavg(include_bytes!("fixtures/loadavg")),
            Some((0.32, 0.64, 0.41))
        );
    }

    #[test]
    fn second_sample_has_busy_ratio_on_this_host() {
        let mut s = CpuSampler::new().unwrap();
        let mut b = pb::Batch::default();
        s.sample(&mut b).unwrap();
        let first = b.cpu.take().unwrap();
        assert_eq!(first.total.unwrap().busy_ratio, 0.0);
        assert!(!first.per_cpu.is_empty());
        // Burn a little CPU so at least one tick passes.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        s.sample(&mut b).unwrap();
        let second = b.cpu.unwrap();
        let busy = second.total.unwrap().busy_ratio;
        assert!(busy > 0.0 && busy <= 1.0, "busy {busy}");
    }
}
