//! Kernel/user ABI of the nodewatch syscall-latency programs.
//!
//! The crate builds for the BPF target (used by the programs in `main.rs`)
//! and for the host (used by the agent to read the maps).
//!
//! # Histogram layout
//!
//! The programs fill histograms in the layout of `nodewatch.v1.Histogram`,
//! whose definition and math (bounds, merging, percentiles) live in
//! `nodewatch_proto::hist`. This crate keeps only what the kernel needs to fill
//! buckets: the layout's constants and a verifier-friendly [`bucket_index`].
//! The agent asserts at compile time that the constants match and tests that
//! both bucket indexes agree on every bucket bound.

#![no_std]

/// Buckets per power of two = `2^GROUPING_POWER`.
pub const GROUPING_POWER: u32 = 3;
/// The histogram covers `0 ..= 2^MAX_VALUE_POWER - 1` nanoseconds.
pub const MAX_VALUE_POWER: u32 = 36;
/// Number of buckets of one histogram.
pub const BUCKETS: usize = (1 << (GROUPING_POWER + 1))
    + ((MAX_VALUE_POWER - GROUPING_POWER - 1) as usize) * (1 << GROUPING_POWER);

/// Syscall numbers tracked per syscall: `0 .. MAX_SYSCALLS` (larger ones are ignored).
pub const MAX_SYSCALLS: u32 = 512;
/// Bits of a start-array entry holding the syscall number (`MAX_SYSCALLS = 2^NR_BITS`).
pub const NR_BITS: u32 = 9;
/// Mask of the syscall number in a start-array entry.
pub const NR_MASK: u64 = (1 << NR_BITS) - 1;

/// Syscall families used for per-cgroup attribution.
pub const FAMILIES: u32 = 8;
/// Family names, indexed by family number (stored per syscall in the `FAMILY` map).
pub const FAMILY_NAMES: [&str; FAMILIES as usize] = [
    "io", "file", "net", "poll", "lock", "sleep", "memory", "misc",
];
/// Family of syscalls that belong to no other family.
pub const FAMILY_MISC: u8 = 7;
/// Value of the family map for syscalls that never return to their caller
/// (`exit`, `exit_group`): their enter leaves an entry that no exit of that
/// thread consumes, and the thread id's next owner must not time its first
/// exit (the return from `clone`) against it. Such entries are dropped.
pub const FAMILY_UNTIMED: u8 = 0xff;

/// Cgroup slots per-family histograms are kept for; slot 0 is "other"
/// (every cgroup not in the slot table), slots `1 ..` are assigned by userspace.
pub const MAX_CGROUP_SLOTS: u32 = 64;
/// Entries of the direct-mapped cgroup id → slot table (index `id & (CGROUP_TABLE_ENTRIES - 1)`).
pub const CGROUP_TABLE_ENTRIES: u32 = 1024;
/// Entries of the direct-mapped per-CPU table counting syscalls of cgroups
/// without a slot (index `id & (CGROUP_MISS_ENTRIES - 1)`), for promotion.
pub const CGROUP_MISS_ENTRIES: u32 = 256;

/// One entry of the cgroup id → slot table. An entry holding another cgroup
/// id means "no slot" (the event goes to slot 0, "other").
#[repr(C)]
#[derive(Clone, Copy, Default)]
#[cfg_attr(not(target_arch = "bpf"), derive(Debug))]
pub struct SlotEntry {
    /// Cgroup id (inode number of the cgroup2 directory); 0 = empty.
    pub cgroup: u64,
    /// Slot, `1 .. MAX_CGROUP_SLOTS`.
    pub slot: u32,
    /// Padding.
    pub _pad: u32,
}

/// Per-thread state, one entry per thread id: what enter leaves for exit, and
/// the thread's cached cgroup slot. One 16-byte entry, so that exit touches a
/// single cache line for both.
#[repr(C)]
#[derive(Clone, Copy, Default)]
#[cfg_attr(not(target_arch = "bpf"), derive(Debug))]
pub struct ThreadEntry {
    /// `start_ns << NR_BITS | syscall number` while a syscall is in flight, else 0.
    pub start: u64,
    /// Cached cgroup slot: `tgid << 32 | generation << 8 | slot`, 0 = none.
    pub slot: u64,
}

/// One entry of the per-CPU miss table: the cgroup currently holding the
/// entry and a counter. A different cgroup decrements the counter and takes
/// the entry over when it reaches zero, so busy cgroups keep their entry.
#[repr(C)]
#[derive(Clone, Copy, Default)]
#[cfg_attr(not(target_arch = "bpf"), derive(Debug))]
pub struct MissEntry {
    /// Cgroup id.
    pub cgroup: u64,
    /// Events counted for it (wraps; userspace takes deltas).
    pub count: u64,
}

/// Name of the per-thread array ([`ThreadEntry`] per thread id; resized to `kernel.pid_max` at load).
pub const MAP_THREADS: &str = "NW_THREADS";
/// Name of the one-entry slot table generation array (`u32`).
pub const MAP_GENERATION: &str = "NW_GENERATION";
/// Bits of the generation kept in a slot cache entry.
pub const GEN_MASK: u32 = 0x00ff_ffff;
/// Name of the per-CPU per-syscall histogram array (`MAX_SYSCALLS` entries of [`Hist`]).
pub const MAP_SYSCALL_HIST: &str = "NW_SYSCALL_HIST";
/// Name of the per-CPU family × cgroup-slot histogram array (`MAX_CGROUP_SLOTS * FAMILIES` entries, index `slot * FAMILIES + family`).
pub const MAP_CGROUP_HIST: &str = "NW_CGROUP_HIST";
/// Name of the syscall number → family array (`u8`, `MAX_SYSCALLS` entries).
pub const MAP_FAMILY: &str = "NW_FAMILY";
/// Name of the cgroup id → slot array ([`SlotEntry`], `CGROUP_TABLE_ENTRIES` entries).
pub const MAP_CGROUP_SLOTS: &str = "NW_CGROUP_SLOTS";
/// Name of the per-CPU miss table ([`MissEntry`], `CGROUP_MISS_ENTRIES` entries).
pub const MAP_CGROUP_MISSES: &str = "NW_CGROUP_MISSES";

/// Program names: full programs (tp_btf and raw tracepoint variants), and
/// reference programs on the same hooks for benchmarks: empty ones (the cost
/// floor), a latency histogram without attribution, and clock reads only.
pub mod programs {
    /// Full sys_enter program, `tp_btf` flavour.
    pub const ENTER_BTF: &str = "nw_enter_btf";
    /// Full sys_exit program, `tp_btf` flavour.
    pub const EXIT_BTF: &str = "nw_exit_btf";
    /// Full sys_enter program, raw tracepoint flavour.
    pub const ENTER_RAW: &str = "nw_enter_raw";
    /// Full sys_exit program, raw tracepoint flavour.
    pub const EXIT_RAW: &str = "nw_exit_raw";
    /// Empty sys_enter program, `tp_btf` flavour.
    pub const EMPTY_ENTER_BTF: &str = "nw_empty_enter_btf";
    /// Empty sys_exit program, `tp_btf` flavour.
    pub const EMPTY_EXIT_BTF: &str = "nw_empty_exit_btf";
    /// Empty sys_enter program, raw tracepoint flavour.
    pub const EMPTY_ENTER_RAW: &str = "nw_empty_enter_raw";
    /// Empty sys_exit program, raw tracepoint flavour.
    pub const EMPTY_EXIT_RAW: &str = "nw_empty_exit_raw";
    /// Reference: latency histogram without cgroup attribution, sys_enter, `tp_btf`.
    pub const PLAIN_ENTER_BTF: &str = "nw_plain_enter_btf";
    /// Reference: latency histogram without cgroup attribution, sys_exit, `tp_btf`.
    pub const PLAIN_EXIT_BTF: &str = "nw_plain_exit_btf";
    /// Reference: latency histogram without cgroup attribution, sys_enter, raw tracepoint.
    pub const PLAIN_ENTER_RAW: &str = "nw_plain_enter_raw";
    /// Reference: latency histogram without cgroup attribution, sys_exit, raw tracepoint.
    pub const PLAIN_EXIT_RAW: &str = "nw_plain_exit_raw";
    /// Reference: one clock read only, sys_enter, `tp_btf`.
    pub const CLOCK_ENTER_BTF: &str = "nw_clock_enter_btf";
    /// Reference: one clock read only, sys_exit, `tp_btf`.
    pub const CLOCK_EXIT_BTF: &str = "nw_clock_exit_btf";
    /// Reference: one clock read only, sys_enter, raw tracepoint.
    pub const CLOCK_ENTER_RAW: &str = "nw_clock_enter_raw";
    /// Reference: one clock read only, sys_exit, raw tracepoint.
    pub const CLOCK_EXIT_RAW: &str = "nw_clock_exit_raw";
}

/// One latency histogram as stored in the kernel maps (per CPU).
///
/// Counters are `u32` and wrap; userspace works on wrapping deltas per
/// interval, so only more than 2^32 events per CPU per interval would be lost.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Hist {
    /// Event count per bucket (layout in the crate docs).
    pub buckets: [u32; BUCKETS],
    /// Events that returned a negative value (an error).
    pub errors: u32,
    /// Padding to a multiple of 8 bytes.
    pub _pad: u32,
}

#[cfg(not(target_arch = "bpf"))]
impl core::fmt::Debug for Hist {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let total: u64 = self.buckets.iter().map(|&c| u64::from(c)).sum();
        f.debug_struct("Hist")
            .field("total", &total)
            .field("errors", &self.errors)
            .finish()
    }
}

/// Bucket index of `value` (nanoseconds). Branch-light and loop-free so that
/// the BPF verifier accepts it; always `< BUCKETS`.
#[inline(always)]
pub fn bucket_index(value: u64) -> usize {
    const CUTOFF_POWER: u32 = GROUPING_POWER + 1;
    const CUTOFF: u64 = 1 << CUTOFF_POWER;
    if value < CUTOFF {
        return value as usize;
    }
    if value >> MAX_VALUE_POWER != 0 {
        return BUCKETS - 1;
    }
    let power = floor_log2(value);
    let log_bin = (power - CUTOFF_POWER) as usize;
    let offset = ((value - (1u64 << power)) >> (power - GROUPING_POWER)) as usize;
    let idx = CUTOFF as usize + (log_bin << GROUPING_POWER) + offset;
    if idx >= BUCKETS { BUCKETS - 1 } else { idx }
}

/// Position of the highest set bit of a non-zero value, by halving steps
/// (no loops, no count-leading-zeros instruction on BPF; each step is one
/// compare, one shift and one add).
#[inline(always)]
fn floor_log2(mut v: u64) -> u32 {
    let mut p = 0;
    if v >> 32 != 0 {
        v >>= 32;
        p += 32;
    }
    if v >> 16 != 0 {
        v >>= 16;
        p += 16;
    }
    if v >> 8 != 0 {
        v >>= 8;
        p += 8;
    }
    if v >> 4 != 0 {
        v >>= 4;
        p += 4;
    }
    if v >> 2 != 0 {
        v >>= 2;
        p += 2;
    }
    if v >> 1 != 0 {
        p += 1;
    }
    p
}
