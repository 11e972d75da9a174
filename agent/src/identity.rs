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
pub fn machine_id() -> Result<String, IdentityError> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(read_trimmed)
        .ok_or(IdentityError::NoMachineId)
}

/// `PRETTY_NAME` of an os-release file's text.
pub fn os_pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        line.strip_prefix("PRETTY_NAME=")
            .map(|v| v.trim().trim_matches('"').to_string())
    })
}

/// Boot time in Unix seconds from /proc/stat text (`btime`).
pub fn boot_time_from_stat(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `MemTotal` in bytes from /proc/meminfo text.
pub fn mem_total_from_meminfo(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Reads this host's identity. `host_id` overrides the machine id when set.
pub fn read(host_id: Option<&str>) -> Result<pb::HostIdentity, IdentityError> {
    let host_id = match host_id {
        Some(id) => id.to_string(),
        None => machine_id()?,
    };
    let hostname = read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown".into());
    let cpu_count = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let cpu_count = std::fs::read_to_string("/proc/stat")
        .ok()
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count() as u32
        })
        .filter(|n| *n > 0)
        .unwrap_or(cpu_count);
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time_from_stat(&s))
        .unwrap_or(0);
    Ok(pb::HostIdentity {
        host_id,
        hostname,
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        os: std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| os_pretty_name(&s))
            .unwrap_or_default(),
        cpu_count,
        memory_total_bytes: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| mem_total_from_meminfo(&s))
            .unwrap_or(0),
        boot_time_unix_nano: i64::try_from(boot_time).unwrap_or(0) * 1_000_000_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release_stat_and_meminfo() {
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            os_pretty_name(os).unwrap(),
            "Debian GNU/Linux 12 (bookworm)"
        );
        let stat = "cpu  1 2 3 4 5 6 7 8 0 0\nintr 5\nctxt 9\nbtime 1732840000\nprocesses 3\n";
        assert_eq!(boot_time_from_stat(stat), Some(1_732_840_000));
        let meminfo = "MemTotal:       24570660 kB\nMemFree:        22000000 kB\n";
        assert_eq!(mem_total_from_meminfo(meminfo), Some(24_570_660 * 1024));
    }

    #[test]
    fn reads_this_host() {
        let id = read(Some("0123456789abcdef")).unwrap();
        assert_eq!(id.host_id, "0123456789abcdef");
        assert!(!id.kernel.is_empty());
        assert!(id.cpu_count >= 1);
        assert!(id.memory_total_bytes > 0);
        assert!(id.boot_time_unix_nano > 0);
    }
}
