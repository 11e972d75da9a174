//! Cgroups of processes: which cgroup a process's memory limit comes from,
//! and that cgroup's effective limit.

use std::collections::HashMap;

use super::parse::parse_memory_limit;
use crate::sys::mountinfo::{CgroupRoots, cgroup_roots};

/// The cgroup a process's memory limit comes from: (whether it is in the v1
/// memory hierarchy, its path in that hierarchy).
pub(super) type MemoryCgroup = (bool, String);

/// Picks a process's memory cgroup from its /proc/PID/cgroup paths: on a
/// hybrid host (v1 memory controller mounted) the limit lives in the v1
/// memory hierarchy, else in the v2 one.
pub(super) fn memory_cgroup(
    has_v1_memory: bool,
    v2: Option<String>,
    v1: Option<String>,
) -> Option<MemoryCgroup> {
    match (has_v1_memory, v1, v2) {
        (true, Some(p), _) => Some((true, p)),
        (_, _, Some(p)) => Some((false, p)),
        _ => None,
    }
}

/// Effective memory limits of cgroups, under the host's hierarchies.
#[derive(Debug)]
pub(super) struct MemoryLimits {
    roots: CgroupRoots,
    cache: HashMap<MemoryCgroup, Option<u64>>,
}

impl MemoryLimits {
    /// Finds the cgroup hierarchies (once: they are not re-read).
    pub(super) fn new() -> Self {
        Self {
            roots: cgroup_roots(),
            cache: HashMap::new(),
        }
    }

    /// Whether the v1 memory controller is mounted (a hybrid host).
    pub(super) fn has_v1_memory(&self) -> bool {
        self.roots.memory_v1.is_some()
    }

    /// Forgets the cached limits (once per pass: limits may change).
    pub(super) fn clear(&mut self) {
        self.cache.clear();
    }

    /// The effective memory limit of a cgroup: the smallest limit on the way
    /// to the root (`None`: unlimited). Cached until [`MemoryLimits::clear`].
    pub(super) fn limit(&mut self, key: &MemoryCgroup) -> Option<u64> {
        if let Some(v) = self.cache.get(key) {
            return *v;
        }
        let root = if key.0 {
            self.roots.memory_v1.as_deref()
        } else {
            self.roots.v2.as_deref()
        };
        let file = if key.0 {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        let mut best: Option<u64> = None;
        if let Some(root) = root {
            let mut path = key.1.trim_end_matches('/').to_string();
            // Bounded by the path depth.
            loop {
                if let Ok(content) = std::fs::read(format!("{root}{path}/{file}"))
                    && let Some(v) = parse_memory_limit(&content)
                {
                    best = Some(best.map_or(v, |b| b.min(v)));
                }
                match path.rfind('/') {
                    Some(i) if !path.is_empty() => path.truncate(i),
                    _ => break,
                }
            }
        }
        if self.cache.len() < 4096 {
            self.cache.insert(key.clone(), best);
        }
        best
    }
}
