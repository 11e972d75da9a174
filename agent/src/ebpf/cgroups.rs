//! Cgroup naming (id → path relative to the cgroup2 root) and the slot table
//! deciding which cgroups get their own histograms.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::sys::mountinfo::cgroup_roots;

/// Directories visited at most by one walk of the cgroup tree.
const MAX_WALK: usize = 50_000;
/// Names remembered at most.
const MAX_NAMES: usize = 10_000;

/// Mount point of the cgroup2 hierarchy (from /proc/self/mountinfo), if any.
pub fn cgroup2_root() -> Option<PathBuf> {
    cgroup_roots().v2.map(PathBuf::from)
}

/// Cgroup id of a cgroup2 directory (its inode number).
pub(crate) fn id_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Resolves cgroup ids to paths relative to the cgroup2 root.
#[derive(Debug)]
pub(crate) struct Names {
    root: Option<PathBuf>,
    names: HashMap<u64, String>,
}

impl Names {
    /// Names under the host's cgroup2 root.
    pub(crate) fn new() -> Self {
        Self {
            root: cgroup2_root(),
            names: HashMap::new(),
        }
    }

    /// Path of cgroup `id` ("/" for the root); walks the tree again when the
    /// id is unknown (`allow_walk`), `None` if still unknown.
    pub(crate) fn name(&mut self, id: u64, allow_walk: bool) -> Option<String> {
        if let Some(n) = self.names.get(&id) {
            return Some(n.clone());
        }
        if allow_walk {
            self.walk();
        }
        self.names.get(&id).cloned()
    }

    /// True when `id` was seen in the latest walk.
    pub(crate) fn known(&self, id: u64) -> bool {
        self.names.contains_key(&id)
    }

    /// Rebuilds the id → path table with a bounded walk of the tree.
    pub(crate) fn walk(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        self.names.clear();
        let mut stack = vec![(root.clone(), String::from("/"))];
        let mut visited = 0usize;
        while let Some((dir, rel)) = stack.pop() {
            visited += 1;
            if visited > MAX_WALK {
                break;
            }
            if let Some(id) = id_of(&dir)
                && self.names.len() < MAX_NAMES
            {
                self.names.insert(id, rel.clone());
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let child_rel = if rel == "/" {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    stack.push((e.path(), child_rel));
                }
            }
        }
    }
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

/// Decides slot assignments: the busiest cgroups get slots `1..=capacity`.
#[derive(Debug)]
pub(crate) struct SlotTable {
    capacity: usize,
    /// Index mask of the kernel's direct-mapped table: two slotted cgroups
    /// never share an index.
    mask: u64,
    /// slot → cgroup id (index 0 unused: "other").
    slots: Vec<Option<u64>>,
}

/// A change the caller applies to the kernel's cgroup → slot map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotChange {
    /// Map `cgroup` to `slot`.
    Assign {
        /// Cgroup id.
        cgroup: u64,
        /// Slot number.
        slot: u32,
    },
    /// Remove `cgroup`'s mapping.
    Release {
        /// Cgroup id.
        cgroup: u64,
    },
}

impl SlotTable {
    /// A table with `capacity` slots (slot 0, "other", not counted) for a
    /// kernel table of `table_entries` (a power of two) entries.
    pub(crate) fn new(capacity: usize, table_entries: u32) -> Self {
        Self {
            capacity,
            mask: u64::from(table_entries.max(1) - 1),
            slots: vec![None; capacity + 1],
        }
    }

    /// Cgroup in `slot`, if any.
    pub(crate) fn cgroup(&self, slot: usize) -> Option<u64> {
        self.slots.get(slot).copied().flatten()
    }

    /// Slots in use.
    pub(crate) fn used(&self) -> usize {
        self.slots.iter().skip(1).filter(|s| s.is_some()).count()
    }

    /// Given this interval's activity of slotted cgroups (`slot_activity[slot]`
    /// = events) and of cgroups without a slot (`misses`: id → events),
    /// assigns free slots to the busiest newcomers and swaps out a slotted
    /// cgroup when a newcomer was more than twice as busy (hysteresis).
    /// Cgroups that no longer exist (`exists` false) are released first.
    pub(crate) fn update(
        &mut self,
        slot_activity: &[u64],
        misses: &[(u64, u64)],
        exists: impl Fn(u64) -> bool,
    ) -> Vec<SlotChange> {
        let mut changes = Vec::new();
        for slot in 1..self.slots.len() {
            if let Some(cg) = self.slots[slot]
                && slot_activity.get(slot).copied().unwrap_or(0) == 0
                && !exists(cg)
            {
                self.slots[slot] = None;
                changes.push(SlotChange::Release { cgroup: cg });
            }
        }
        let mut newcomers: Vec<(u64, u64)> = misses
            .iter()
            .copied()
            .filter(|(id, n)| *n > 0 && !self.slots.contains(&Some(*id)))
            .collect();
        newcomers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        // Slots filled in this call have no activity figure yet: never victims.
        let mut fresh = vec![false; self.slots.len()];
        for (cg, events) in newcomers {
            let mask = self.mask;
            if self.slots.iter().flatten().any(|&c| c & mask == cg & mask) {
                // Its table entry is taken: stays in "other".
                continue;
            }
            if let Some(slot) = (1..self.slots.len()).find(|&s| self.slots[s].is_none()) {
                self.slots[slot] = Some(cg);
                fresh[slot] = true;
                changes.push(SlotChange::Assign {
                    cgroup: cg,
                    slot: slot as u32,
                });
                continue;
            }
            // Full: replace the least active slot if the newcomer is much busier.
            let Some(victim) = (1..self.slots.len())
                .filter(|&s| !fresh[s])
                .min_by_key(|&s| slot_activity.get(s).copied().unwrap_or(0))
            else {
                break;
            };
            let victim_events = slot_activity.get(victim).copied().unwrap_or(0);
            if events <= victim_events.saturating_mul(2) {
                break;
            }
            if let Some(old) = self.slots[victim] {
                changes.push(SlotChange::Release { cgroup: old });
            }
            self.slots[victim] = Some(cg);
            fresh[victim] = true;
            changes.push(SlotChange::Assign {
                cgroup: cg,
                slot: victim as u32,
            });
        }
        let _ = self.capacity;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_get_slots_then_swap_with_hysteresis() {
        let mut t = SlotTable::new(2, 1024);
        let ch = t.update(&[0, 0, 0], &[(10, 5), (11, 50), (12, 20)], |_| true);
        assert_eq!(t.used(), 2);
        assert_eq!(t.cgroup(1), Some(11));
        assert_eq!(t.cgroup(2), Some(12));
        assert_eq!(ch.len(), 2);
        // 10 is busier than slot 2 but not twice: no swap.
        let ch = t.update(&[0, 100, 30], &[(10, 50)], |_| true);
        assert!(ch.is_empty());
        // Now more than twice: swapped into the least active slot.
        let ch = t.update(&[0, 100, 30], &[(10, 61)], |_| true);
        assert_eq!(
            ch,
            vec![
                SlotChange::Release { cgroup: 12 },
                SlotChange::Assign {
                    cgroup: 10,
                    slot: 2
                }
            ]
        );
    }

    #[test]
    fn colliding_cgroups_share_no_table_entry() {
        let mut t = SlotTable::new(4, 16);
        t.update(&[0; 5], &[(3, 10), (19, 9), (4, 8)], |_| true);
        assert_eq!(t.used(), 2);
        assert_eq!(t.cgroup(1), Some(3));
        assert_eq!(t.cgroup(2), Some(4));
    }

    #[test]
    fn vanished_cgroups_are_released() {
        let mut t = SlotTable::new(1, 1024);
        t.update(&[0, 0], &[(7, 1)], |_| true);
        let ch = t.update(&[0, 0], &[], |id| id != 7);
        assert_eq!(ch, vec![SlotChange::Release { cgroup: 7 }]);
        assert_eq!(t.used(), 0);
    }

    #[test]
    fn root_is_named_slash() {
        let mut n = Names::new();
        if let Some(root) = cgroup2_root() {
            let id = id_of(&root).unwrap();
            assert_eq!(n.name(id, true).as_deref(), Some("/"));
        }
    }
}
