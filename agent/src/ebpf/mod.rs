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

mod batch;
pub mod cgroups;
mod cost;
pub mod syscalls;

use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData};
use aya::programs::{BtfTracePoint, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use nodewatch_agent_ebpf::{
    BUCKETS, CGROUP_MISS_ENTRIES, CGROUP_TABLE_ENTRIES, FAMILIES, GROUPING_POWER, MAX_CGROUP_SLOTS,
    MAX_SYSCALLS, MAX_VALUE_POWER, programs as names,
};
use nodewatch_proto::{hist, pb};
use serde::Deserialize;
use tracing::{info, warn};

use self::cgroups::{Names, SlotChange, SlotTable};
use self::cost::CostMonitor;

/// The compiled eBPF object.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodewatch-ebpf"));

/// The embedded eBPF object (programs and maps of `nodewatch-agent-ebpf`).
pub fn object_bytes() -> &'static [u8] {
    EBPF_OBJECT
}

/// Where the kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Which tracepoint flavour to attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HookChoice {
    /// `tp_btf` when the kernel has BTF and accepts it, else raw tracepoints.
    #[default]
    Auto,
    /// Only `tp_btf` (BTF-typed raw tracepoints).
    TpBtf,
    /// Only raw tracepoints.
    RawTracepoint,
}

/// eBPF configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EbpfConfig {
    /// Load and attach the syscall programs.
    pub enabled: bool,
    /// Hook flavour: "auto" (tp_btf, falling back to raw tracepoints), "tp_btf" or "raw_tracepoint".
    pub hook: HookChoice,
    /// Cgroups that get their own per-family histograms (the busiest ones; the
    /// rest is reported as "other"). At most 63.
    pub max_cgroups: u32,
    /// Share of the host's total CPU time the programs may use (0..1); above
    /// it they are detached for a back-off period.
    pub cpu_budget: f64,
    /// Measure the programs' cost every this many intervals (when the kernel
    /// does not keep BPF statistics on by itself).
    pub cost_every: u32,
    /// Length of one cost measurement window (statistics enabled only within it).
    #[serde(with = "humantime_serde")]
    pub cost_window: Duration,
    /// First back-off period after exceeding the budget; doubles each time.
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest back-off period.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hook: HookChoice::Auto,
            max_cgroups: 32,
            cpu_budget: 0.02,
            cost_every: 6,
            cost_window: Duration::from_millis(100),
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
        }
    }
}

/// Why eBPF is not in use.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// Turned off by configuration.
    #[error("disabled by configuration")]
    Disabled,
    /// A capability needed to load tracing programs is missing.
    #[error("missing {0}")]
    MissingCapability(&'static str),
    /// `tp_btf` was required but the kernel exposes no BTF.
    #[error("no BTF at {VMLINUX_BTF}")]
    NoBtf,
    /// A kernel setting could not be read.
    #[error("cannot read {0}: {1}")]
    Read(&'static str, std::io::Error),
    /// The object or a program could not be loaded.
    #[error("cannot load the eBPF programs: {0}")]
    Load(String),
    /// The programs could not be attached.
    #[error("cannot attach to the syscall tracepoints: {0}")]
    Attach(String),
    /// A map is missing or has an unexpected type.
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, String),
}

use nodewatch_proto::daemon::error_chain as chain;

/// Hook flavour in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// BTF-typed raw tracepoints.
    TpBtf,
    /// Raw tracepoints.
    RawTracepoint,
}

impl Hook {
    /// Name as reported in `EbpfStats.hook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TpBtf => "tp_btf",
            Hook::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities needed to load tracing programs.
pub fn check_capabilities() -> Result<(), EbpfError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| EbpfError::Read("/proc/self/status", e))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    if !has(CAP_BPF) {
        return Err(EbpfError::MissingCapability("CAP_BPF"));
    }
    if !has(CAP_PERFMON) {
        return Err(EbpfError::MissingCapability("CAP_PERFMON"));
    }
    Ok(())
}

/// Number of thread ids the kernel can hand out (`kernel.pid_max`).
fn pid_max() -> Result<u32, EbpfError> {
    let s = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .map_err(|e| EbpfError::Read("/proc/sys/kernel/pid_max", e))?;
    Ok(s.trim()
        .parse::<u32>()
        .unwrap_or(4_194_304)
        .clamp(1024, 1 << 22))
}

/// Loads the embedded object with the per-thread array sized for `pid_max`.
fn load_object() -> Result<Ebpf, EbpfError> {
    check_capabilities()?;
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it (best effort).
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    let pid_max = pid_max()?;
    EbpfLoader::new()
        .map_max_entries(nodewatch_agent_ebpf::MAP_THREADS, pid_max)
        .load(EBPF_OBJECT)
        .map_err(|e| EbpfError::Load(chain(&e)))
}

/// Loads and attaches the enter/exit pair `(enter, exit)` of the given hook.
fn attach_pair(ebpf: &mut Ebpf, hook: Hook, enter: &str, exit: &str) -> Result<Links, EbpfError> {
    // Kernel BTF is parsed only when a program still has to be loaded: a
    // re-attach after a back-off reuses the loaded programs.
    let mut btf: Option<Btf> = None;
    let mut ids = Vec::with_capacity(2);
    for (name, tp) in [(enter, "sys_enter"), (exit, "sys_exit")] {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| EbpfError::Load(format!("program {name} missing from the object")))?;
        match hook {
            Hook::TpBtf => {
                let p: &mut BtfTracePoint =
                    prog.try_into().map_err(|e| EbpfError::Load(chain(&e)))?;
                if p.fd().is_err() {
                    if btf.is_none() {
                        btf = Some(Btf::from_sys_fs().map_err(|_| EbpfError::NoBtf)?);
                    }
                    if let Some(btf) = &btf {
                        p.load(tp, btf).map_err(|e| EbpfError::Load(chain(&e)))?;
                    }
                }
                ids.push(LinkId::Btf(
                    p.attach().map_err(|e| EbpfError::Attach(chain(&e)))?,
                ));
            }
            Hook::RawTracepoint => {
                let p: &mut RawTracePoint =
                    prog.try_into().map_err(|e| EbpfError::Load(chain(&e)))?;
                if p.fd().is_err() {
                    p.load().map_err(|e| EbpfError::Load(chain(&e)))?;
                }
                ids.push(LinkId::Raw(
                    p.attach(tp).map_err(|e| EbpfError::Attach(chain(&e)))?,
                ));
            }
        }
    }
    Ok(Links {
        hook,
        names: [enter.to_string(), exit.to_string()],
        ids,
    })
}

#[derive(Debug)]
enum LinkId {
    Btf(aya::programs::tp_btf::BtfTracePointLinkId),
    Raw(aya::programs::raw_trace_point::RawTracePointLinkId),
}

/// Attached enter/exit programs.
#[derive(Debug)]
struct Links {
    hook: Hook,
    names: [String; 2],
    ids: Vec<LinkId>,
}

impl Links {
    fn detach(self, ebpf: &mut Ebpf) {
        for (name, id) in self.names.iter().zip(self.ids) {
            let Some(prog) = ebpf.program_mut(name) else {
                continue;
            };
            match id {
                LinkId::Btf(id) => {
                    if let Ok(p) = <&mut BtfTracePoint>::try_from(prog) {
                        let _ = p.detach(id);
                    }
                }
                LinkId::Raw(id) => {
                    if let Ok(p) = <&mut RawTracePoint>::try_from(prog) {
                        let _ = p.detach(id);
                    }
                }
            }
        }
    }
}

/// Attaches `choice`'s hook, falling back from tp_btf to raw tracepoints in
/// `Auto` mode; `set` picks nodewatch's programs or a reference set.
fn attach(ebpf: &mut Ebpf, choice: HookChoice, set: ProgramSet) -> Result<Links, EbpfError> {
    let links = attach_hook(ebpf, choice, set);
    // Loading parses the kernel's BTF (tens of MiB while it lasts). It is freed
    // at once, but a thread's malloc arena keeps the touched pages unless told
    // to give them back; without this a re-attach after a back-off leaves the
    // agent ~20 MiB larger for good.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    links
}

/// Which programs of the object to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramSet {
    /// nodewatch's programs (what the agent attaches).
    Full,
    /// Reference: empty programs on the same hooks, the cost floor of the mechanism.
    Empty,
    /// Reference: the latency histogram per syscall without cgroup attribution.
    Plain,
    /// Reference: one clock read on enter and one on exit, nothing else.
    Clock,
}

impl ProgramSet {
    /// `((enter, exit) for tp_btf, (enter, exit) for raw tracepoints)`.
    fn names(self) -> ((&'static str, &'static str), (&'static str, &'static str)) {
        match self {
            ProgramSet::Full => (
                (names::ENTER_BTF, names::EXIT_BTF),
                (names::ENTER_RAW, names::EXIT_RAW),
            ),
            ProgramSet::Empty => (
                (names::EMPTY_ENTER_BTF, names::EMPTY_EXIT_BTF),
                (names::EMPTY_ENTER_RAW, names::EMPTY_EXIT_RAW),
            ),
            ProgramSet::Plain => (
                (names::PLAIN_ENTER_BTF, names::PLAIN_EXIT_BTF),
                (names::PLAIN_ENTER_RAW, names::PLAIN_EXIT_RAW),
            ),
            ProgramSet::Clock => (
                (names::CLOCK_ENTER_BTF, names::CLOCK_EXIT_BTF),
                (names::CLOCK_ENTER_RAW, names::CLOCK_EXIT_RAW),
            ),
        }
    }
}

fn attach_hook(ebpf: &mut Ebpf, choice: HookChoice, set: ProgramSet) -> Result<Links, EbpfError> {
    let (btf_pair, raw_pair) = set.names();
    match choice {
        HookChoice::TpBtf => attach_pair(ebpf, Hook::TpBtf, btf_pair.0, btf_pair.1),
        HookChoice::RawTracepoint => attach_pair(ebpf, Hook::RawTracepoint, raw_pair.0, raw_pair.1),
        HookChoice::Auto => match attach_pair(ebpf, Hook::TpBtf, btf_pair.0, btf_pair.1) {
            Ok(l) => Ok(l),
            Err(e @ EbpfError::MissingCapability(_)) => Err(e),
            Err(e) => {
                info!("ebpf: tp_btf unavailable ({e}); using raw tracepoints");
                attach_pair(ebpf, Hook::RawTracepoint, raw_pair.0, raw_pair.1)
            }
        },
    }
}

/// Reference programs attached on the syscall hooks, for benchmarks (the
/// agent itself uses [`SyscallTracer`]). Detached when dropped.
#[derive(Debug)]
pub struct ReferencePrograms {
    ebpf: Ebpf,
    links: Option<Links>,
}

impl ReferencePrograms {
    /// Loads the object and attaches the given set.
    pub fn attach(set: ProgramSet, hook: HookChoice) -> Result<Self, EbpfError> {
        let mut ebpf = load_object()?;
        let links = attach(&mut ebpf, hook, set)?;
        Ok(Self {
            ebpf,
            links: Some(links),
        })
    }

    /// Hook in use.
    pub fn hook(&self) -> Option<Hook> {
        self.links.as_ref().map(|l| l.hook)
    }
}

impl Drop for ReferencePrograms {
    fn drop(&mut self) {
        if let Some(l) = self.links.take() {
            l.detach(&mut self.ebpf);
        }
    }
}

/// Words of one histogram as summed over CPUs: buckets then the error count.
const WORDS: usize = BUCKETS + 1;
/// Bytes of one `Hist` value.
const HIST_BYTES: usize = std::mem::size_of::<nodewatch_agent_ebpf::Hist>();

/// Reads a per-CPU `Hist` array with batched lookups, summing CPUs (wrapping).
struct PerCpuHists {
    map: MapData,
    entries: usize,
    cpus: usize,
    keys: Vec<u8>,
    values: Vec<u8>,
    prev: Vec<u32>,
    cur: Vec<u32>,
}

impl PerCpuHists {
    fn new(map: MapData, entries: usize, cpus: usize) -> Self {
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
    fn read(&mut self) -> std::io::Result<()> {
        std::mem::swap(&mut self.prev, &mut self.cur);
        let stride = HIST_BYTES.next_multiple_of(8);
        let n = batch::lookup(
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
    fn delta(&self, i: usize, out: &mut [u64; BUCKETS]) -> (u64, u64) {
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

fn histogram(dense: &[u64; BUCKETS]) -> pb::Histogram {
    let s = hist::Sparse::from_dense(dense);
    pb::Histogram {
        grouping_power: GROUPING_POWER,
        max_value_power: MAX_VALUE_POWER,
        indices: s.indices,
        counts: s.counts,
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, EbpfError> {
    ebpf.take_map(name)
        .ok_or_else(|| EbpfError::Map(name, "missing from the object".into()))
}

fn map_data(map: Map, name: &'static str) -> Result<MapData, EbpfError> {
    match map {
        Map::PerCpuArray(m) | Map::HashMap(m) | Map::Array(m) => Ok(m),
        other => Err(EbpfError::Map(name, format!("unexpected type {other:?}"))),
    }
}

/// Loaded and attached syscall programs.
pub struct SyscallTracer {
    ebpf: Ebpf,
    config: EbpfConfig,
    links: Option<Links>,
    hook: Hook,
    syscall_hists: PerCpuHists,
    cgroup_hists: PerCpuHists,
    misses: MapData,
    miss_keys: Vec<u8>,
    miss_values: Vec<u8>,
    /// Previous miss-table contents per (entry, CPU): (cgroup, count).
    miss_prev: Vec<(u64, u64)>,
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

        // Syscall number → family.
        {
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
        }
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
        let misses = map_data(
            take_map(&mut ebpf, nodewatch_agent_ebpf::MAP_CGROUP_MISSES)?,
            nodewatch_agent_ebpf::MAP_CGROUP_MISSES,
        )?;
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
            miss_keys: Vec::new(),
            miss_values: Vec::new(),
            miss_prev: vec![(0, 0); CGROUP_MISS_ENTRIES as usize * cpus],
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

        // Cgroups without a slot: their counters' change since the last read
        // (per CPU), then promote the busiest.
        let cpus = self.syscall_hists.cpus;
        let n = batch::lookup(
            self.misses.fd().as_fd(),
            false,
            4,
            16 * cpus,
            CGROUP_MISS_ENTRIES as usize,
            &mut self.miss_keys,
            &mut self.miss_values,
        )?;
        let mut by_cgroup: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        for e in 0..n {
            let key = u32::from_ne_bytes(
                self.miss_keys[e * 4..e * 4 + 4]
                    .try_into()
                    .unwrap_or([0; 4]),
            ) as usize;
            if key >= CGROUP_MISS_ENTRIES as usize {
                continue;
            }
            for cpu in 0..cpus {
                let base = (e * cpus + cpu) * 16;
                let word = |o: usize| {
                    u64::from_ne_bytes(
                        self.miss_values[base + o..base + o + 8]
                            .try_into()
                            .unwrap_or([0; 8]),
                    )
                };
                let (cg, count) = (word(0), word(8));
                let prev = &mut self.miss_prev[key * cpus + cpu];
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
        let misses: Vec<(u64, u64)> = by_cgroup.into_iter().collect();
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
            if let Err(e) = batch::zero_array(
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

fn hook_choice(hook: Hook) -> HookChoice {
    match hook {
        Hook::TpBtf => HookChoice::TpBtf,
        Hook::RawTracepoint => HookChoice::RawTracepoint,
    }
}

impl Drop for SyscallTracer {
    fn drop(&mut self) {
        if let Some(l) = self.links.take() {
            l.detach(&mut self.ebpf);
        }
    }
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
