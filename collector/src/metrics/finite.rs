//! The one walk over every f64 of a batch, shared by ingest validation and the
//! store (both refuse NaN and infinities, naming the field).

use nodewatch_proto::pb;

/// Name of the first NaN or infinite number of a batch, if any. The one walk
/// over a batch's floating-point fields, shared by ingest validation and the store.
pub fn first_non_finite(batch: &pb::Batch) -> Option<&'static str> {
    fn pressure(name: &'static str, p: Option<&pb::Pressure>) -> Option<&'static str> {
        let p = p?;
        [
            p.some_avg10,
            p.some_avg60,
            p.some_avg300,
            p.full_avg10,
            p.full_avg60,
            p.full_avg300,
        ]
        .iter()
        .any(|v| !v.is_finite())
        .then_some(name)
    }
    fn first(fields: &[(&'static str, f64)]) -> Option<&'static str> {
        fields
            .iter()
            .find(|(_, v)| !v.is_finite())
            .map(|(name, _)| *name)
    }
    if let Some(cpu) = &batch.cpu {
        for t in cpu.total.iter().chain(cpu.per_cpu.iter()) {
            let bad = first(&[
                ("cpu.user_seconds", t.user_seconds),
                ("cpu.nice_seconds", t.nice_seconds),
                ("cpu.system_seconds", t.system_seconds),
                ("cpu.idle_seconds", t.idle_seconds),
                ("cpu.iowait_seconds", t.iowait_seconds),
                ("cpu.irq_seconds", t.irq_seconds),
                ("cpu.softirq_seconds", t.softirq_seconds),
                ("cpu.steal_seconds", t.steal_seconds),
                ("cpu.busy_ratio", t.busy_ratio),
            ]);
            if bad.is_some() {
                return bad;
            }
        }
        let bad = first(&[
            ("cpu.load1", cpu.load1),
            ("cpu.load5", cpu.load5),
            ("cpu.load15", cpu.load15),
        ])
        .or_else(|| pressure("cpu.pressure", cpu.pressure.as_ref()));
        if bad.is_some() {
            return bad;
        }
    }
    if let Some(mem) = &batch.memory {
        let bad = pressure("memory.pressure", mem.pressure.as_ref())
            .or_else(|| pressure("memory.io_pressure", mem.io_pressure.as_ref()));
        if bad.is_some() {
            return bad;
        }
    }
    for d in &batch.block_devices {
        if !d.utilization.is_finite() {
            return Some("block_devices.utilization");
        }
    }
    if let Some(e) = &batch.ebpf {
        let bad = first(&[
            ("ebpf.cpu_fraction", e.cpu_fraction),
            ("ebpf.cpu_budget", e.cpu_budget),
        ]);
        if bad.is_some() {
            return bad;
        }
    }
    for p in &batch.processes {
        let bad = first(&[
            ("processes.user_seconds", p.user_seconds),
            ("processes.system_seconds", p.system_seconds),
            ("processes.cpu_ratio", p.cpu_ratio),
        ]);
        if bad.is_some() {
            return bad;
        }
    }
    None
}
