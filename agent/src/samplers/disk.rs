//! Filesystems and block devices: `statvfs` of every real mount from
//! /proc/self/mountinfo (pseudo filesystems skipped, a filesystem mounted several
//! times reported once) and /proc/diskstats with utilisation.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::time::Instant;

use nodewatch_proto::pb;

use super::{Sampler, SamplerError};
use crate::sys::mountinfo::{MountEntry, parse_mountinfo_line};
use crate::sys::procfile::{ProcFile, fields, lines, parse_u64};

/// Filesystem types that hold no user data (kernel interfaces, cgroups, ...).
/// tmpfs is kept: it fills up like any disk and takes RAM with it.
const PSEUDO_FS: &[&[u8]] = &[
    b"autofs",
    b"binfmt_misc",
    b"bpf",
    b"cgroup",
    b"cgroup2",
    b"configfs",
    b"debugfs",
    b"devpts",
    b"devtmpfs",
    b"efivarfs",
    b"fusectl",
    b"hugetlbfs",
    b"mqueue",
    b"nsfs",
    b"proc",
    b"pstore",
    b"ramfs",
    b"rpc_pipefs",
    b"securityfs",
    b"selinuxfs",
    b"sysfs",
    b"tracefs",
    b"squashfs",
    b"iso9660",
    b"erofs",
];

/// Network filesystems: `statvfs` on a hung server blocks the caller, so they are
/// sampled only when configured.
const REMOTE_FS: &[&[u8]] = &[
    b"nfs",
    b"nfs4",
    b"cifs",
    b"smb3",
    b"smbfs",
    b"ceph",
    b"glusterfs",
    b"9p",
    b"afs",
];

/// The mounts worth reporting: pseudo (and, unless `remote`, network) filesystems
/// dropped, and each filesystem (device number) once — the mount of its root
/// when there is one, else the first seen.
pub(crate) fn real_mounts(content: &[u8], remote: bool) -> Vec<MountEntry> {
    let all: Vec<MountEntry> = lines(content).filter_map(parse_mountinfo_line).collect();
    // A later mount on the same mount point hides the earlier one: statvfs of
    // the path reaches only the top one.
    let mut top: HashMap<&str, usize> = HashMap::new();
    for (i, m) in all.iter().enumerate() {
        top.insert(m.mount_point.as_str(), i);
    }
    let mut chosen: Vec<MountEntry> = Vec::new();
    let mut by_dev: HashMap<(u32, u32), usize> = HashMap::new();
    for (i, m) in all.iter().enumerate() {
        if top.get(m.mount_point.as_str()) != Some(&i) {
            continue;
        }
        let fs = m.fs_type.as_bytes();
        let is_remote = REMOTE_FS.contains(&fs) || fs.starts_with(b"fuse.sshfs");
        if PSEUDO_FS.contains(&fs) || (!remote && is_remote) {
            continue;
        }
        match by_dev.get(&m.dev) {
            Some(&j) => {
                if chosen[j].root != "/" && m.root == "/" {
                    chosen[j] = m.clone();
                }
            }
            None => {
                by_dev.insert(m.dev, chosen.len());
                chosen.push(m.clone());
            }
        }
    }
    chosen
}

/// `statvfs` of `path` into a [`pb::DiskUsage`] (identity fields from `mount`).
pub(crate) fn disk_usage(mount: &MountEntry) -> Result<pb::DiskUsage, SamplerError> {
    let c_path =
        CString::new(Path::new(&mount.mount_point).as_os_str().as_bytes()).map_err(|_| {
            SamplerError::Parse {
                path: mount.mount_point.clone().into(),
                reason: "mount point holds a NUL byte",
            }
        })?;
    // SAFETY: zeroed statvfs is a valid out-parameter; c_path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(SamplerError::Os {
            call: "statvfs",
            source: std::io::Error::last_os_error(),
        });
    }
    let frsize = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    } as u64;
    Ok(pb::DiskUsage {
        mount_point: mount.mount_point.clone(),
        device: mount.source.clone(),
        fs_type: mount.fs_type.clone(),
        size_bytes: st.f_blocks as u64 * frsize,
        free_bytes: st.f_bfree as u64 * frsize,
        available_bytes: st.f_bavail as u64 * frsize,
        inodes_total: st.f_files as u64,
        inodes_free: st.f_ffree as u64,
        read_only: mount.read_only || (st.f_flag & libc::ST_RDONLY) != 0,
    })
}

/// One line of /proc/diskstats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DiskStatsLine {
    /// Device name.
    pub(crate) name: String,
    /// reads completed, sectors read, ms reading, writes completed, sectors written,
    /// ms writing, in flight, io_ticks ms.
    pub(crate) reads: u64,
    /// Sectors (512 bytes) read.
    pub(crate) read_sectors: u64,
    /// Milliseconds reading.
    pub(crate) read_ms: u64,
    /// Writes completed.
    pub(crate) writes: u64,
    /// Sectors (512 bytes) written.
    pub(crate) write_sectors: u64,
    /// Milliseconds writing.
    pub(crate) write_ms: u64,
    /// I/Os in flight.
    pub(crate) in_flight: u64,
    /// Milliseconds with I/O in flight.
    pub(crate) io_ticks_ms: u64,
}

/// Parses one /proc/diskstats line.
pub(crate) fn parse_diskstats_line(line: &[u8]) -> Option<DiskStatsLine> {
    let mut it = fields(line);
    let _major = it.next()?;
    let _minor = it.next()?;
    let name = it.next()?;
    let mut v = [0u64; 10];
    for slot in &mut v {
        *slot = parse_u64(it.next()?)?;
    }
    Some(DiskStatsLine {
        name: String::from_utf8_lossy(name).into_owned(),
        reads: v[0],
        read_sectors: v[2],
        read_ms: v[3],
        writes: v[4],
        write_sectors: v[6],
        write_ms: v[7],
        in_flight: v[8],
        io_ticks_ms: v[9],
    })
}

/// Whether a block device is worth reporting: whole devices only (listed in
/// /sys/block), no RAM disks, and no device that never did any I/O (unused loops).
fn wanted_device(line: &DiskStatsLine, whole: &[String]) -> bool {
    whole.contains(&line.name)
        && !line.name.starts_with("ram")
        && line.reads + line.writes + line.in_flight > 0
}

/// Samples the real mounts (`statvfs`) and the whole block devices, with
/// each device's utilisation since the previous pass.
#[derive(Debug)]
pub struct DiskSampler {
    mountinfo: ProcFile,
    diskstats: ProcFile,
    remote: bool,
    whole_devices: Vec<String>,
    previous: HashMap<String, (u64, Instant)>,
}

impl DiskSampler {
    /// Opens /proc/self/mountinfo and /proc/diskstats. `remote`: also sample network filesystems.
    pub fn new(remote: bool) -> Result<Self, SamplerError> {
        Ok(Self {
            mountinfo: ProcFile::open("/proc/self/mountinfo")?,
            diskstats: ProcFile::open("/proc/diskstats")?,
            remote,
            whole_devices: Vec::new(),
            previous: HashMap::new(),
        })
    }

    fn refresh_whole_devices(&mut self) {
        self.whole_devices.clear();
        if let Ok(dir) = std::fs::read_dir("/sys/block") {
            for e in dir.flatten() {
                self.whole_devices
                    .push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
}

impl Sampler for DiskSampler {
    fn name(&self) -> &'static str {
        "disks"
    }

    fn sample(&mut self, batch: &mut pb::Batch) -> Result<(), SamplerError> {
        let mounts = real_mounts(self.mountinfo.read()?, self.remote);
        for m in &mounts {
            match disk_usage(m) {
                // A filesystem without blocks holds nothing worth reporting.
                Ok(u) if u.size_bytes > 0 => batch.disks.push(u),
                Ok(_) => {}
                // A mount that vanished between reading mountinfo and statvfs.
                Err(SamplerError::Os { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }

        self.refresh_whole_devices();
        let now = Instant::now();
        let content = self.diskstats.read()?;
        let mut seen = Vec::new();
        for line in lines(content) {
            let Some(d) = parse_diskstats_line(line) else {
                continue;
            };
            if !wanted_device(&d, &self.whole_devices) {
                continue;
            }
            let utilization = match self.previous.get(&d.name) {
                Some(&(ticks, at)) => {
                    let wall_ms = now.duration_since(at).as_secs_f64() * 1000.0;
                    if wall_ms > 0.0 && d.io_ticks_ms >= ticks {
                        ((d.io_ticks_ms - ticks) as f64 / wall_ms).clamp(0.0, 1.0)
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            self.previous.insert(d.name.clone(), (d.io_ticks_ms, now));
            seen.push(d.name.clone());
            batch.block_devices.push(pb::BlockDeviceStats {
                device: d.name,
                reads: d.reads,
                writes: d.writes,
                read_bytes: d.read_sectors * 512,
                write_bytes: d.write_sectors * 512,
                read_time_ms: d.read_ms,
                write_time_ms: d.write_ms,
                in_flight: d.in_flight,
                io_time_ms: d.io_ticks_ms,
                utilization,
            });
        }
        // Forget removed devices (bounded state).
        self.previous.retain(|k, _| seen.contains(k));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_mounts_of_a_real_mountinfo() {
        let mounts = real_mounts(include_bytes!("fixtures/mountinfo"), false);
        let points: Vec<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        // /dev/shm is mounted twice (0:23, then 0:27 on top): only the top one is reachable.
        let shm: Vec<&MountEntry> = mounts
            .iter()
            .filter(|m| m.mount_point == "/dev/shm")
            .collect();
        assert_eq!(shm.len(), 1);
        assert_eq!(shm[0].dev, (0, 27));
        assert!(points.contains(&"/sys/fs/cgroup"), "tmpfs is real");
        assert!(points.contains(&"/"));
        assert!(!points.contains(&"/proc"));
        assert!(!points.contains(&"/dev/pts"));
        assert!(!points.iter().any(|p| p.starts_with("/sys/fs/cgroup/")));
        let root = mounts.iter().find(|m| m.mount_point == "/").unwrap();
        assert_eq!(root.source, "/dev/vda");
        assert_eq!(root.fs_type, "ext4");
    }

    #[test]
    fn bind_mount_prefers_the_filesystem_root() {
        let info = b"1 0 8:1 /data/sub /bind rw - ext4 /dev/sda1 rw\n\
                     2 0 8:1 / /data rw - ext4 /dev/sda1 rw\n\
                     3 0 0:50 / /remote rw - nfs4 srv:/x rw\n";
        let mounts = real_mounts(info, false);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, "/data");
        assert_eq!(real_mounts(info, true).len(), 2);
    }

    #[test]
    fn parses_real_diskstats() {
        let content: &[u8] = include_bytes!("fixtures/diskstats");
        let vda = lines(content)
            .filter_map(parse_diskstats_line)
            .find(|d| d.name == "vda")
            .unwrap();
        assert_eq!(vda.reads, 53999);
        assert_eq!(vda.read_sectors, 5_961_770);
        assert_eq!(vda.read_ms, 71966);
        assert_eq!(vda.writes, 9315);
        assert_eq!(vda.write_sectors, 7_939_944);
        assert_eq!(vda.write_ms, 58763);
        assert_eq!(vda.in_flight, 0);
        assert_eq!(vda.io_ticks_ms, 16432);
        let whole = vec!["vda".to_string(), "loop0".to_string(), "zram0".to_string()];
        let wanted: Vec<String> = lines(content)
            .filter_map(parse_diskstats_line)
            .filter(|d| wanted_device(d, &whole))
            .map(|d| d.name)
            .collect();
        assert_eq!(
            wanted,
            vec!["vda".to_string()],
            "idle loop and zram dropped"
        );
    }
}
