//! The programs. Hot path, per syscall: enter stores `(now << NR_BITS) | nr`
//! in the thread's entry of the thread array; exit reads and clears it, adds
//! one to the syscall's per-CPU histogram bucket (and error count), then to the
//! family × cgroup-slot histogram, the slot coming from the same entry's cache.
//! Constant work, no loops, no ring buffer.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use nodewatch_agent_ebpf::{
    CGROUP_MISS_ENTRIES, CGROUP_TABLE_ENTRIES, FAMILIES, FAMILY_MISC, FAMILY_UNTIMED, GEN_MASK,
    Hist, MAX_CGROUP_SLOTS, MAX_SYSCALLS, MissEntry, NR_BITS, NR_MASK, SlotEntry, ThreadEntry,
    bucket_index,
};

/// Per thread id: start time and syscall number of the syscall in flight, and
/// the cached cgroup slot; resized to `kernel.pid_max` at load.
#[map(name = "NW_THREADS")]
static NW_THREADS: Array<ThreadEntry> = Array::with_max_entries(1, 0);

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

/// Slot table generation (one entry), bumped by userspace every interval.
#[map(name = "NW_GENERATION")]
static NW_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Direct-mapped cgroup id → slot table, maintained by userspace. An array
/// (lookups inlined by the verifier) rather than a hash map: no helper call.
#[map(name = "NW_CGROUP_SLOTS")]
static NW_CGROUP_SLOTS: Array<SlotEntry> = Array::with_max_entries(CGROUP_TABLE_ENTRIES, 0);

/// Direct-mapped per-CPU counters of cgroups without a slot; read by userspace.
#[map(name = "NW_CGROUP_MISSES")]
static NW_CGROUP_MISSES: PerCpuArray<MissEntry> =
    PerCpuArray::with_max_entries(CGROUP_MISS_ENTRIES, 0);

#[inline(always)]
fn on_enter(id: i64) {
    if id < 0 || id >= i64::from(MAX_SYSCALLS) {
        return;
    }
    // Clock first: with return-stack mitigations the first helper call of a
    // program run pays most of the call overhead, and the clock is the call
    // that must be made anyway (the thread-id call after it measured ~20 ns
    // cheaper than in the other order, kernel BPF statistics).
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(t) = NW_THREADS.get_ptr_mut(tid) {
        // SAFETY: the pointer comes from a successful map lookup.
        unsafe { (*t).start = (now << NR_BITS) | (id as u64 & NR_MASK) };
    }
}

/// Exit: the latency into the syscall's histogram, then, when `attribute`
/// (a constant at each call site), into the family × cgroup-slot histogram.
#[inline(always)]
fn on_exit(ret: i64, attribute: bool) {
    // Clock first, as on enter.
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(t) = NW_THREADS.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: the pointer comes from a successful map lookup; it stays valid
    // for the program's run (array elements are never freed).
    let t = unsafe { &mut *t };
    let entry = t.start;
    if entry == 0 {
        return;
    }
    t.start = 0;
    let nr = (entry & NR_MASK) as u32;
    let family = match NW_FAMILY.get(nr) {
        Some(&f) => f,
        None => FAMILY_MISC,
    };
    if family == FAMILY_UNTIMED {
        // Left by a thread that exited; this thread id has a new owner.
        return;
    }
    // Wrapping difference on the shifted clock, then back to nanoseconds.
    let delta = (now << NR_BITS).wrapping_sub(entry & !NR_MASK) >> NR_BITS;
    let bucket = bucket_index(delta);
    let failed = ret < 0;

    if let Some(h) = NW_SYSCALL_HIST.get_ptr_mut(nr) {
        // SAFETY: per-CPU value of this CPU, from a successful lookup.
        unsafe { add(h, bucket, failed) };
    }
    if !attribute {
        return;
    }

    let family = if u32::from(family) < FAMILIES {
        u32::from(family)
    } else {
        u32::from(FAMILY_MISC)
    };
    let cslot = cgroup_slot(&mut t.slot, pid_tgid >> 32);
    if cslot < MAX_CGROUP_SLOTS
        && let Some(h) = NW_CGROUP_HIST.get_ptr_mut(cslot * FAMILIES + family)
    {
        // SAFETY: as above.
        unsafe { add(h, bucket, failed) };
    }
}

/// Slot of the current task's cgroup. A thread's slot is cached in its thread
/// entry (tagged with its process id and the table generation, which userspace
/// bumps every interval), so that threads of slotted cgroups skip the cgroup
/// helper; cgroups without a slot always take the full path (it counts them).
#[inline(always)]
fn cgroup_slot(cache: &mut u64, tgid: u64) -> u32 {
    let generation = match NW_GENERATION.get(0) {
        Some(&g) => u64::from(g & GEN_MASK),
        None => 0,
    };
    let v = *cache;
    if v != 0 && v >> 32 == tgid && (v >> 8) & u64::from(GEN_MASK) == generation {
        return (v & 0xff) as u32;
    }
    // SAFETY: helper without preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let idx = (cgroup & u64::from(CGROUP_TABLE_ENTRIES - 1)) as u32;
    match NW_CGROUP_SLOTS.get(idx) {
        Some(e) if e.cgroup == cgroup && e.slot != 0 => {
            *cache = (tgid << 32) | (generation << 8) | u64::from(e.slot & 0xff);
            e.slot
        }
        _ => {
            note_miss(cgroup);
            0
        }
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
    let idx = (cgroup & u64::from(CGROUP_MISS_ENTRIES - 1)) as u32;
    if let Some(p) = NW_CGROUP_MISSES.get_ptr_mut(idx) {
        // SAFETY: this CPU's value, from a successful lookup.
        let e = unsafe { &mut *p };
        if e.cgroup == cgroup {
            e.count = e.count.wrapping_add(1);
        } else if e.count == 0 {
            e.cgroup = cgroup;
            e.count = 1;
        } else {
            e.count -= 1;
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
    on_exit(ctx.arg::<i64>(1), true);
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn nw_enter_raw(ctx: RawTracePointContext) -> i32 {
    on_enter(ctx.arg::<i64>(1));
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn nw_exit_raw(ctx: RawTracePointContext) -> i32 {
    on_exit(ctx.arg::<i64>(1), true);
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

// Reference programs for `cargo xtask bench syscalls`, on the same hooks:
// "plain" is the latency histogram without cgroup attribution (enter as
// nodewatch's, exit without the family × cgroup part); "clock" only reads the
// clock on enter and exit, the least any latency measurement pays.

/// Where the clock-only programs put what they read, so the reads stay.
#[map(name = "NW_SCRATCH")]
static NW_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn clock_only() {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(p) = NW_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's value, from a successful lookup.
        unsafe { *p = now };
    }
}

#[btf_tracepoint(function = "sys_enter")]
pub fn nw_plain_enter_btf(ctx: BtfTracePointContext) -> i32 {
    on_enter(ctx.arg::<i64>(1));
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn nw_plain_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_exit(ctx.arg::<i64>(1), false);
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn nw_plain_enter_raw(ctx: RawTracePointContext) -> i32 {
    on_enter(ctx.arg::<i64>(1));
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn nw_plain_exit_raw(ctx: RawTracePointContext) -> i32 {
    on_exit(ctx.arg::<i64>(1), false);
    0
}

#[btf_tracepoint(function = "sys_enter")]
pub fn nw_clock_enter_btf(_ctx: BtfTracePointContext) -> i32 {
    clock_only();
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn nw_clock_exit_btf(_ctx: BtfTracePointContext) -> i32 {
    clock_only();
    0
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn nw_clock_enter_raw(_ctx: RawTracePointContext) -> i32 {
    clock_only();
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn nw_clock_exit_raw(_ctx: RawTracePointContext) -> i32 {
    clock_only();
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
