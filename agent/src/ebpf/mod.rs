//! eBPF syscall latency: loads the programs of `nodewatch-agent-ebpf` (embedded
//! at build time), attaches them to the syscall enter/exit tracepoints
//! (`tp_btf`, falling back to raw tracepoints), and turns the kernel's per-CPU
//! histograms into per-interval sparse deltas, per syscall host-wide and per
//! syscall family × cgroup for the busiest cgroups.
//!
//! Maps are read with batched lookups (a few syscalls per map, not one per
//! element). The programs' own cost is measured from the kernel's BPF run-time
//! statistics in short windows; above the configured budget the programs are
//! detached for a growing back-off period.
//!
//! [`SyscallTracer`] is what the agent runs; [`ReferencePrograms`] are the
//! reference programs the syscall benchmark compares it with.

mod attach;
mod batch;
pub mod cgroups;
mod config;
mod cost;
mod error;
mod maps;
mod reference;
mod syscalls;

use std::os::fd::AsFd as _;
use std::time::Instant;

use aya::Ebpf;
use aya::maps::{Array, MapData};
use nodewatch_agent_ebpf::{
    BUCKETS, CGROUP_TABLE_ENTRIES, FAMILIES, MAX_CGROUP_SLOTS, MAX_SYSCALLS,
};
use nodewatch_proto::daemon::error_chain as chain;
use nodewatch_proto::pb;
use tracing::{info, warn};

pub use self::attach::{Hook, ProgramSet};
use self::attach::{Links, attach, hook_choice, load_object};
use self::batch::zero_array;
use self::cgroups::{Names, SlotChange, SlotTable};
pub use self::config::{EbpfConfig, HookChoice};
use self::cost::CostMonitor;
pub use self::error::EbpfError;
use self::maps::{MissCounts, PerCpuHists, histogram, map_data, take_map, write_families};
pub use self::reference::ReferencePrograms;

/// Loaded and attached syscall programs.
pub struct SyscallTracer {
    ebpf: Ebpf,
    config: EbpfConfig,
    links: Option<Links>,
    hook: Hook,
    syscall_hists: PerCpuHists,
    cgroup_hists: PerCpuHists,
    misses: MissCounts,
    slot_map: Array<MapData, [u8; 16]>,
    generation_map: Array<MapData, u32>,
    generation: u32,
    /// The per-thread array (cleared before a re-attach) and its length.
    threads: MapData,
    thread_entries: u32,
    slots: SlotTable,
    /// Cgroup name per slot for the interval being reported.
    names: Names,
    cost: CostMonitor,
    last: Instant,
    scratch: Box<[u64; BUCKETS]>,
    warned_read: bool,
}

impl std::fmt::Debug for SyscallTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyscallTracer")
            .field("hook", &self.hook)
            .field("attached", &self.links.is_some())
            .field("cgroup_slots", &self.slots.used())
            .finish()
    }
}

impl SyscallTracer {
    /// Loads and attaches the programs.
    pub fn start(config: &EbpfConfig) -> Result<SyscallTracer, EbpfError> {
        if !config.enabled {
            return Err(EbpfError::Disabled);
        }
        let mut ebpf = load_object()?;

        write_families(&mut ebpf)?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(path, e)| EbpfError::Load(format!("cannot read {path}: {e}")))?;
        let syscall_hists = PerCpuHists::new(
            map_data(
                take_map(&mut ebpf, nodewatch_agent_ebpf::MAP_SYSCALL_HIST)?,
                nodewatch_agent_ebpf::MAP_SYSCALL_HIST,
            )?,
            MAX_SYSCALLS as usize,
            cpus,
        );
        let cgroup_hists = PerCpuHists::new(
            map_data(
                take_map(&mut ebpf, nodewatch_agent_ebpf::MAP_CGROUP_HIST)?,
                nodewatch_agent_ebpf::MAP_CGROUP_HIST,
            )?,
            (MAX_CGROUP_SLOTS * FAMILIES) as usize,
            cpus,
        );
        let misses = MissCounts::new(
            map_data(
                take_map(&mut ebpf, nodewatch_agent_ebpf::MAP_CGROUP_MISSES)?,
                nodewatch_agent_ebpf::MAP_CGROUP_MISSES,
            )?,
            cpus,
        );
        let slot_map =
            Array::try_from(take_map(&mut ebpf, nodewatch_agent_ebpf::MAP_CGROUP_SLOTS)?)
                .map_err(|e| EbpfError::Map(nodewatch_agent_ebpf::MAP_CGROUP_SLOTS, chain(&e)))?;

        let mut generation_map: Array<MapData, u32> =
            Array::try_from(take_map(&mut ebpf, nodewatch_agent_ebpf::MAP_GENERATION)?)
                .map_err(|e| EbpfError::Map(nodewatch_agent_ebpf::MAP_GENERATION, chain(&e)))?;
        generation_map
            .set(0, 1, 0)
            .map_err(|e| EbpfError::Map(nodewatch_agent_ebpf::MAP_GENERATION, chain(&e)))?;
        let threads = map_data(
            take_map(&mut ebpf, nodewatch_agent_ebpf::MAP_THREADS)?,
            nodewatch_agent_ebpf::MAP_THREADS,
        )?;
        let thread_entries = threads
            .info()
            .map_err(|e| EbpfError::Map(nodewatch_agent_ebpf::MAP_THREADS, chain(&e)))?
            .max_entries();
        let links = attach(&mut ebpf, config.hook, ProgramSet::Full)?;
        let hook = links.hook;
        let max_cgroups = config.max_cgroups.min(MAX_CGROUP_SLOTS - 1) as usize;
        let mut names = Names::new();
        names.walk();
        Ok(SyscallTracer {
            cost: CostMonitor::new(config),
            ebpf,
            config: config.clone(),
            links: Some(links),
            hook,
            syscall_hists,
            cgroup_hists,
            misses,
            slot_map,
            generation_map,
            generation: 1,
            threads,
            thread_entries,
            slots: SlotTable::new(max_cgroups, CGROUP_TABLE_ENTRIES),
            names,
            last: Instant::now(),
            scratch: Box::new([0; BUCKETS]),
            warned_read: false,
        })
    }

    /// Hook in use.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// Cgroups that currently have their own slot, by path relative to the cgroup2 root.
    pub fn tracked_cgroups(&mut self) -> Vec<String> {
        (1..MAX_CGROUP_SLOTS as usize)
            .filter_map(|slot| self.slots.cgroup(slot))
            .map(|id| {
                self.names
                    .name(id, false)
                    .unwrap_or_else(|| format!("cgroup-id:{id}"))
            })
            .collect()
    }

    /// True while the programs are attached (not backed off).
    pub fn attached(&self) -> bool {
        self.links.is_some()
    }

    /// Called once per sampling interval from a blocking thread: deltas since the previous call.
    pub fn collect(&mut self) -> (Vec<pb::SyscallLatency>, pb::EbpfStats) {
        let now = Instant::now();
        let interval = now.duration_since(self.last);
        self.last = now;
        let mut out = Vec::new();
        let mut stats = pb::EbpfStats {
            interval_ns: interval.as_nanos() as u64,
            cpu_budget: self.config.cpu_budget,
            hook: self.hook.as_str().to_string(),
            ..Default::default()
        };
        if let Err(e) = self.read_all(&mut out, &mut stats)
            && !self.warned_read
        {
            warn!(
                "ebpf: cannot read the histogram maps ({e}); syscall latency is missing from batches"
            );
            self.warned_read = true;
        }
        self.cost_step(&mut stats);
        stats.backed_off = self.links.is_none();
        stats.cgroup_slots = self.slots.used() as u32;
        (out, stats)
    }

    fn read_all(
        &mut self,
        out: &mut Vec<pb::SyscallLatency>,
        stats: &mut pb::EbpfStats,
    ) -> std::io::Result<()> {
        self.syscall_hists.read()?;
        for nr in 0..MAX_SYSCALLS as usize {
            let (count, errors) = self.syscall_hists.delta(nr, &mut self.scratch);
            if count == 0 {
                continue;
            }
            stats.syscalls += count;
            out.push(pb::SyscallLatency {
                syscall: syscalls::name(nr as u32),
                cgroup: String::new(),
                count,
                errors,
                latency_ns: Some(histogram(&self.scratch)),
            });
        }

        self.cgroup_hists.read()?;
        let mut activity = vec![0u64; MAX_CGROUP_SLOTS as usize];
        let mut slot_names: Vec<Option<String>> = vec![None; MAX_CGROUP_SLOTS as usize];
        for slot in 0..MAX_CGROUP_SLOTS as usize {
            for family in 0..FAMILIES as usize {
                let (count, errors) = self
                    .cgroup_hists
                    .delta(slot * FAMILIES as usize + family, &mut self.scratch);
                if count == 0 {
                    continue;
                }
                activity[slot] += count;
                let cgroup = if slot == 0 {
                    "other".to_string()
                } else {
                    if slot_names[slot].is_none() {
                        slot_names[slot] = Some(match self.slots.cgroup(slot) {
                            Some(id) => self
                                .names
                                .name(id, false)
                                .unwrap_or_else(|| format!("cgroup-id:{id}")),
                            None => "other".to_string(),
                        });
                    }
                    slot_names[slot].clone().unwrap_or_default()
                };
                out.push(pb::SyscallLatency {
                    syscall: syscalls::family_label(family),
                    cgroup,
                    count,
                    errors,
                    latency_ns: Some(histogram(&self.scratch)),
                });
            }
        }

        // Cgroups without a slot: their activity since the last read, then
        // promote the busiest.
        let misses = self.misses.read()?;
        let unknown = misses
            .iter()
            .any(|(id, _)| self.names.name(*id, false).is_none());
        if unknown {
            self.names.walk();
        }
        let names = &self.names;
        let changes = self.slots.update(&activity, &misses, |id| names.known(id));
        for change in changes {
            match change {
                SlotChange::Assign { cgroup, slot } => {
                    let mut entry = [0u8; 16];
                    entry[..8].copy_from_slice(&cgroup.to_ne_bytes());
                    entry[8..12].copy_from_slice(&slot.to_ne_bytes());
                    let _ = self.slot_map.set(table_index(cgroup), entry, 0);
                }
                SlotChange::Release { cgroup } => {
                    let _ = self.slot_map.set(table_index(cgroup), [0u8; 16], 0);
                }
            }
        }
        // New generation: per-thread slot caches are trusted for one interval
        // at most, so slot changes and cgroup migrations show within one interval.
        self.generation = (self.generation % nodewatch_agent_ebpf::GEN_MASK) + 1;
        let _ = self.generation_map.set(0, self.generation, 0);
        Ok(())
    }

    fn cost_step(&mut self, stats: &mut pb::EbpfStats) {
        let now = Instant::now();
        if let Some(links) = self.links.take() {
            let names = links.names.clone();
            self.links = Some(links);
            let m = self.cost.measure(&self.ebpf, &names);
            if let Some(m) = m {
                stats.run_time_ns = m.run_time_ns;
                stats.run_count = m.run_count;
                stats.stats_window_ns = m.window_ns;
                stats.cpu_fraction = m.cpu_fraction;
                if m.cpu_fraction > self.config.cpu_budget {
                    let backoff = self.cost.back_off(now);
                    warn!(
                        "ebpf: programs use {:.3}% of host CPU, above the budget of {:.3}%; detaching for {}",
                        m.cpu_fraction * 100.0,
                        self.config.cpu_budget * 100.0,
                        humantime::format_duration(backoff)
                    );
                    if let Some(l) = self.links.take() {
                        l.detach(&mut self.ebpf);
                    }
                } else {
                    self.cost.within_budget();
                }
            }
        } else if self.cost.may_retry(now) {
            // Entries left from before the back-off would time a syscall that
            // started while detached from a start that belongs to an earlier one.
            if let Err(e) = zero_array(
                self.threads.fd().as_fd(),
                std::mem::size_of::<nodewatch_agent_ebpf::ThreadEntry>(),
                self.thread_entries,
            ) {
                warn!(
                    "ebpf: cannot clear the per-thread entries ({e}); the first latency of threads in a syscall may span the back-off"
                );
            }
            match attach(&mut self.ebpf, hook_choice(self.hook), ProgramSet::Full) {
                Ok(l) => {
                    info!("ebpf: back-off over; programs attached again");
                    self.links = Some(l);
                }
                Err(e) => {
                    let backoff = self.cost.back_off(now);
                    warn!(
                        "ebpf: cannot attach again ({e}); next try in {}",
                        humantime::format_duration(backoff)
                    );
                }
            }
        }
    }
}

/// Index of `cgroup` in the kernel's direct-mapped slot table.
fn table_index(cgroup: u64) -> u32 {
    (cgroup & u64::from(CGROUP_TABLE_ENTRIES - 1)) as u32
}

impl Drop for SyscallTracer {
    fn drop(&mut self) {
        if let Some(l) = self.links.take() {
            l.detach(&mut self.ebpf);
        }
    }
}
