//! /proc/self/mountinfo: its lines, and where the cgroup hierarchies are mounted.

use super::procfile::{fields, lines, parse_u64};

/// One line of /proc/self/mountinfo, the parts the agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Device number `major:minor` of the filesystem.
    pub(crate) dev: (u32, u32),
    /// Root of the mount inside its filesystem ("/" unless a bind of a subdirectory).
    pub(crate) root: String,
    /// Mount point, unescaped.
    pub(crate) mount_point: String,
    /// Filesystem type.
    pub(crate) fs_type: String,
    /// Mount source, unescaped.
    pub(crate) source: String,
    /// Mounted read-only (per-mount or superblock option).
    pub(crate) read_only: bool,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (s[i + 1] - b'0') * 64 + (s[i + 2] - b'0') * 8 + (s[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn has_ro(options: &[u8]) -> bool {
    options.split(|&b| b == b',').any(|o| o == b"ro")
}

/// Parses one mountinfo line.
pub(crate) fn parse_mountinfo_line(line: &[u8]) -> Option<MountEntry> {
    let mut it = fields(line);
    let _id = it.next()?;
    let _parent = it.next()?;
    let dev = it.next()?;
    let root = it.next()?;
    let mount_point = it.next()?;
    let mount_options = it.next()?;
    // Optional fields end with a lone "-".
    for f in it.by_ref() {
        if f == b"-" {
            break;
        }
    }
    let fs_type = it.next()?;
    let source = it.next()?;
    let super_options = it.next().unwrap_or(b"");
    let colon = dev.iter().position(|&b| b == b':')?;
    let major = u32::try_from(parse_u64(&dev[..colon])?).ok()?;
    let minor = u32::try_from(parse_u64(&dev[colon + 1..])?).ok()?;
    Some(MountEntry {
        dev: (major, minor),
        root: unescape(root),
        mount_point: unescape(mount_point),
        fs_type: String::from_utf8_lossy(fs_type).into_owned(),
        source: unescape(source),
        read_only: has_ro(mount_options) || has_ro(super_options),
    })
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, Default)]
pub(crate) struct CgroupRoots {
    /// Mount point of the cgroup2 (unified) hierarchy.
    pub(crate) v2: Option<String>,
    /// Mount point of the v1 hierarchy holding the memory controller.
    pub(crate) memory_v1: Option<String>,
}

/// Finds the first cgroup2 mount and the first v1 mount with the memory
/// controller in /proc/self/mountinfo (none when it cannot be read).
pub(crate) fn cgroup_roots() -> CgroupRoots {
    let mut roots = CgroupRoots::default();
    let Ok(content) = std::fs::read("/proc/self/mountinfo") else {
        return roots;
    };
    for line in lines(&content) {
        let Some(m) = parse_mountinfo_line(line) else {
            continue;
        };
        if m.fs_type == "cgroup2" && roots.v2.is_none() {
            roots.v2 = Some(m.mount_point);
        } else if m.fs_type == "cgroup" && roots.memory_v1.is_none() {
            // The super options (last field) name the controllers.
            let opts = fields(line).last().unwrap_or(b"");
            if opts.split(|&b| b == b',').any(|o| o == b"memory") {
                roots.memory_v1 = Some(m.mount_point);
            }
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let m = parse_mountinfo_line(
            b"36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(m.dev, (98, 0));
        assert_eq!(m.root, "/mnt1");
        assert_eq!(m.mount_point, "/mnt/my disk");
        assert_eq!(m.fs_type, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert!(!m.read_only);
        let ro = parse_mountinfo_line(b"1 2 0:5 / /x ro,relatime - tmpfs tmpfs rw").unwrap();
        assert!(ro.read_only);
        assert!(parse_mountinfo_line(b"1 2 x / /x rw - tmpfs tmpfs rw").is_none());
    }
}
