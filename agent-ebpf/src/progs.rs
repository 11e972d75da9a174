//! The programs. Hot path, per syscall: enter stores `(now << NR_BITS) | nr`
//! in the thread's slot of the start array; exit reads and clears it, adds one
//! to the syscall's per-CPU histogram bucket (and error count), then to the
//! family × cgroup-slot histogram. Constant work, no loops, no ring buffer.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use nodewatch_agent_ebpf::{
    CGROUP_MISS_ENTRIES, FAMILIES, FAMILY_MISC, Hist, MAX_CGROUP_SLOTS, MAX_SYSCALLS, NR_BITS,
    NR_MASK, bucket_index,
};

/// Start time and syscall number per thread id; resized to `kernel.pid_max` at load.
#[map(name = "NW_START")]
static NW_START: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU latency histogram per syscall number.
#[map(name = "NW_SYSCALL_HIST")]
static NW_SYSCALL_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(MAX_SYSCALLS, 0);

/// Per-CPU latency histogram per cgroup slot × syscall family.
#[map(name = "NW_CGROUP_HIST")]
static NW_CGROUP_HIST: PerCpuArray<Hist> =
    PerCpuArray::with_max_entries(MAX_CGROUP_SLOTS * FAMILIES, 0);

/// Syscall number → family, filled by userspace.
#[map(name = "NW_FAMILY")]
static NW_FAMILY: Array<u8> = Array::with_max_entries(MAX_SYSCALLS, 0);

/// Cgroup id → slot (1..MAX_CGROUP_SLOTS), maintained by userspace.
#[map(name = "NW_CGROUP_SLOTS")]
static NW_CGROUP_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_CGROUP_SLOTS, 0);

/// Cgroup id → syscalls seen while the cgroup had no slot; read and cleared by userspace.
#[map(name = "NW_CGROUP_MISSES")]
static NW_CGROUP_MISSES: HashMap<u64, u64> = HashMap::with_max_entries(CGROUP_MISS_ENTRIES, 0);

#[inline(always)]
fn on_enter(id: i64) {
    if id < 0 || id >= i64::from(MAX_SYSCALLS) {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(slot) = NW_START.get_ptr_mut(tid) {
        // SAFETY: helper without preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: the pointer comes from a successful map lookup.
        unsafe { *slot = (now << NR_BITS) | (id as u64 & NR_MASK) };
    }
}

#[inline(always)]
fn on_exit(ret: i64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = NW_START.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: the pointer comes from a successful map lookup.
    let entry = unsafe { *slot };
    if entry == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { *slot = 0 };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let nr = (entry & NR_MASK) as u32;
    // Wrapping difference on the shifted clock, then back to nanoseconds.
    let delta = (now << NR_BITS).wrapping_sub(entry & !NR_MASK) >> NR_BITS;
    let bucket = bucket_index(delta);
    let failed = ret < 0;

    if let Some(h) = NW_SYSCALL_HIST.get_ptr_mut(nr) {
        // SAFETY: per-CPU value of this CPU, from a successful lookup.
        unsafe { add(h, bucket, failed) };
    }

    let family = match NW_FAMILY.get(nr) {
        Some(&f) if u32::from(f) < FAMILIES => u32::from(f),
        _ => u32::from(FAMILY_MISC),
    };
    // SAFETY: helper without preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let cslot = match NW_CGROUP_SLOTS.get_ptr(cgroup) {
        // SAFETY: pointer from a successful lookup.
        Some(p) => unsafe { *p },
        None => {
            note_miss(cgroup);
            0
        }
    };
    if cslot < MAX_CGROUP_SLOTS
        && let Some(h) = NW_CGROUP_HIST.get_ptr_mut(cslot * FAMILIES + family)
    {
        // SAFETY: as above.
        unsafe { add(h, bucket, failed) };
    }
}

#[inline(always)]
unsafe fn add(h: *mut Hist, bucket: usize, failed: bool) {
    // SAFETY: the caller passes a valid per-CPU value.
    let h = unsafe { &mut *h };
    if let Some(c) = h.buckets.get_mut(bucket) {
        *c = c.wrapping_add(1);
    }
    if failed {
        h.errors = h.errors.wrapping_add(1);
    }
}

#[inline(always)]
fn note_miss(cgroup: u64) {
    match NW_CGROUP_MISSES.get_ptr_mut(cgroup) {
        Some(p) => {
            // SAFETY: the pointer comes from a successful lookup. Not atomic: a
            // lost increment under contention only blurs a promotion heuristic.
            unsafe { *p = (*p).wrapping_add(1) };
        }
        None => {
            // Fails silently when the table is full; userspace clears it each interval.
            let _ = NW_CGROUP_MISSES.insert(cgroup, 1u64, u64::from(BPF_NOEXIST));
        }
    }
}

#[btf_tracepoint(function = "sys_enter")]
pub fn nw_enter_btf(ctx: BtfTracePointContext) -> i32 {
    on_enter(ctx.arg::<i64>(1));
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn nw_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_exit(ctx.arg::<i64>(1));
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn nw_enter_raw(ctx: RawTracePointContext) -> i32 {
    on_enter(ctx.arg::<i64>(1));
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn nw_exit_raw(ctx: RawTracePointContext) -> i32 {
    on_exit(ctx.arg::<i64>(1));
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn nw_empty_enter_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn nw_empty_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn nw_empty_enter_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn nw_empty_exit_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// tp_btf programs need a GPL-compatible license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
