//! Who this host is: machine id, hostname, boot id, kernel, OS.

use std::path::Path;

use nodewatch_proto::pb;

/// Why the host identity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Neither /etc/machine-id nor /var/lib/dbus/machine-id holds a machine id.
    #[error(
        "no machine id in /etc/machine-id or /var/lib/dbus/machine-id; set host_id in the config"
    )]
    NoMachineId,
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Reads the machine id (systemd's /etc/machine-id, or D-Bus's copy).
fn machine_id() -> Result<String, IdentityError> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(read_trimmed)
        .ok_or(IdentityError::NoMachineId)
}

/// Reads this host's identity. `host_id` overrides the machine id when set.
///
/// Read once at start-up, so convenience wins over cost here: procfs for typed
/// /proc values, sysinfo for the operating system's name.
pub fn read(host_id: Option<&str>) -> Result<pb::HostIdentity, IdentityError> {
    use procfs::Current as _;

    let host_id = match host_id {
        Some(id) => id.to_string(),
        None => machine_id()?,
    };
    let hostname = read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| sysinfo::System::host_name().ok())
        .unwrap_or_else(|| "unknown".into());
    let cpu_count = procfs::CpuInfo::current()
        .map(|c| c.num_cores())
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let boot_time = procfs::boot_time_secs().unwrap_or(0);
    Ok(pb::HostIdentity {
        host_id,
        hostname,
        boot_id: procfs::sys::kernel::random::boot_id()
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        os: sysinfo::System::long_os_version().unwrap_or_default(),
        cpu_count,
        memory_total_bytes: procfs::Meminfo::current().map_or(0, |m| m.mem_total),
        boot_time_unix_nano: i64::try_from(boot_time).unwrap_or(0) * 1_000_000_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_host() {
        let id = read(Some("0123456789abcdef")).unwrap();
        assert_eq!(id.host_id, "0123456789abcdef");
        assert!(!id.kernel.is_empty());
        assert!(id.cpu_count >= 1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(id.memory_total_bytes, kib * 1024);
        let online = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes()[3].is_ascii_digit())
            .count();
        assert_eq!(id.cpu_count as usize, online);
        assert_eq!(id.boot_id.len(), 36, "{}", id.boot_id);
        assert!(id.boot_time_unix_nano > 0);
    }
}
