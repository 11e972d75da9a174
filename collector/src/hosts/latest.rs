//! The latest value of every part of a host's batches. Agents sample some parts
//! at a slower cadence (disks, sockets, processes every 10 s), so the newest
//! batch alone does not hold a full picture: each part is taken from the newest
//! batch carrying it. Parts are shared (`Arc`), so an update costs a few
//! reference counts, not a copy of the batch.

use std::sync::Arc;

use nodewatch_proto::pb;

/// Latest batch parts of a host, each from the newest batch carrying it.
#[derive(Debug, Default, Clone)]
pub struct LatestParts {
    newest: Option<Arc<pb::Batch>>,
    cpu: Option<Arc<pb::Batch>>,
    memory: Option<Arc<pb::Batch>>,
    disks: Option<Arc<pb::Batch>>,
    block: Option<Arc<pb::Batch>>,
    conns: Option<Arc<pb::Batch>>,
    procs: Option<Arc<pb::Batch>>,
    syscalls: Option<Arc<pb::Batch>>,
    ebpf: Option<Arc<pb::Batch>>,
    agent: Option<Arc<pb::Batch>>,
}

impl LatestParts {
    /// Takes every part `b` carries; `b` becomes the newest batch.
    pub fn update(&mut self, b: &Arc<pb::Batch>) {
        self.newest = Some(b.clone());
        let set = |slot: &mut Option<Arc<pb::Batch>>, has: bool| {
            if has {
                *slot = Some(b.clone());
            }
        };
        set(&mut self.cpu, b.cpu.is_some());
        set(&mut self.memory, b.memory.is_some());
        set(&mut self.disks, !b.disks.is_empty());
        set(&mut self.block, !b.block_devices.is_empty());
        set(&mut self.conns, b.connections.is_some());
        set(&mut self.procs, !b.processes.is_empty());
        set(&mut self.syscalls, !b.syscalls.is_empty());
        set(&mut self.ebpf, b.ebpf.is_some());
        set(&mut self.agent, b.agent.is_some());
    }

    /// Sample time of the newest batch, 0 before any.
    pub fn time_unix_nano(&self) -> i64 {
        self.newest.as_ref().map_or(0, |b| b.time_unix_nano)
    }

    /// The latest CPU figures.
    pub fn cpu(&self) -> Option<&pb::CpuStats> {
        self.cpu.as_ref().and_then(|b| b.cpu.as_ref())
    }

    /// The latest memory figures.
    pub fn memory(&self) -> Option<&pb::MemoryStats> {
        self.memory.as_ref().and_then(|b| b.memory.as_ref())
    }

    /// One batch holding every latest part, with the newest batch's seq and time.
    pub fn merged(&self) -> Option<pb::Batch> {
        let newest = self.newest.as_ref()?;
        let mut out = pb::Batch {
            seq: newest.seq,
            time_unix_nano: newest.time_unix_nano,
            ..Default::default()
        };
        if let Some(b) = &self.cpu {
            out.cpu = b.cpu.clone();
        }
        if let Some(b) = &self.memory {
            out.memory = b.memory;
        }
        if let Some(b) = &self.disks {
            out.disks = b.disks.clone();
        }
        if let Some(b) = &self.block {
            out.block_devices = b.block_devices.clone();
        }
        if let Some(b) = &self.conns {
            out.connections = b.connections.clone();
        }
        if let Some(b) = &self.procs {
            out.processes = b.processes.clone();
            out.processes_complete = b.processes_complete;
        }
        if let Some(b) = &self.syscalls {
            out.syscalls = b.syscalls.clone();
        }
        if let Some(b) = &self.ebpf {
            out.ebpf = b.ebpf.clone();
        }
        if let Some(b) = &self.agent {
            out.agent = b.agent;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slower_parts_stay_visible() {
        let mut latest = LatestParts::default();
        assert!(latest.merged().is_none());
        latest.update(&Arc::new(pb::Batch {
            seq: 1,
            time_unix_nano: 10,
            processes: vec![pb::ProcessStats {
                pid: 7,
                ..Default::default()
            }],
            processes_complete: true,
            agent: Some(pb::AgentStats {
                dropped_batches: 3,
                ..Default::default()
            }),
            ..Default::default()
        }));
        latest.update(&Arc::new(pb::Batch {
            seq: 2,
            time_unix_nano: 20,
            memory: Some(pb::MemoryStats {
                total_bytes: 100,
                ..Default::default()
            }),
            ..Default::default()
        }));
        let m = latest.merged().unwrap();
        assert_eq!((m.seq, m.time_unix_nano), (2, 20));
        assert_eq!(m.processes[0].pid, 7);
        assert!(m.processes_complete);
        assert_eq!(m.agent.unwrap().dropped_batches, 3);
        assert_eq!(latest.memory().unwrap().total_bytes, 100);
        assert!(latest.cpu().is_none());
        assert_eq!(latest.time_unix_nano(), 20);
    }
}
