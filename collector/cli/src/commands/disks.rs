//! `nodewatch disks <HOST>`: filesystems and block devices from the latest snapshot.

use nodewatch_proto::pb;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::client::CliError;
use crate::render::units::{bytes, percent};
use crate::render::{OutputFormat, Table, print_json};

fn used_ratio(d: &pb::DiskUsage) -> f64 {
    // Like df: used / (used + available), so root's reserve counts as used.
    let used = d.size_bytes.saturating_sub(d.free_bytes);
    let denom = used + d.available_bytes;
    if denom == 0 {
        0.0
    } else {
        used as f64 / denom as f64
    }
}

fn inode_ratio(d: &pb::DiskUsage) -> Option<f64> {
    (d.inodes_total > 0)
        .then(|| d.inodes_total.saturating_sub(d.inodes_free) as f64 / d.inodes_total as f64)
}

/// JSON document of `nodewatch disks`.
pub fn to_json(latest: &pb::Batch) -> Value {
    json!({
        "time_unix_nano": latest.time_unix_nano,
        "filesystems": latest.disks.iter().map(|d| json!({
            "mount_point": d.mount_point,
            "device": d.device,
            "fs_type": d.fs_type,
            "size_bytes": d.size_bytes,
            "free_bytes": d.free_bytes,
            "available_bytes": d.available_bytes,
            "used_ratio": used_ratio(d),
            "inodes_total": d.inodes_total,
            "inodes_free": d.inodes_free,
            "inodes_used_ratio": inode_ratio(d),
            "read_only": d.read_only,
        })).collect::<Vec<_>>(),
        "block_devices": latest.block_devices.iter().map(|b| json!({
            "device": b.device,
            "reads": b.reads,
            "writes": b.writes,
            "read_bytes": b.read_bytes,
            "write_bytes": b.write_bytes,
            "read_time_ms": b.read_time_ms,
            "write_time_ms": b.write_time_ms,
            "in_flight": b.in_flight,
            "io_time_ms": b.io_time_ms,
            "utilization": b.utilization,
        })).collect::<Vec<_>>(),
    })
}

/// Renders both tables.
pub fn render(latest: &pb::Batch) -> String {
    let mut fs = Table::new([
        "MOUNT",
        "DEVICE",
        "TYPE",
        "SIZE",
        "USED",
        "AVAIL",
        "USE",
        "INODES USE",
        "RO",
    ]);
    for d in &latest.disks {
        fs.row([
            d.mount_point.clone(),
            d.device.clone(),
            d.fs_type.clone(),
            bytes(d.size_bytes),
            bytes(d.size_bytes.saturating_sub(d.free_bytes)),
            bytes(d.available_bytes),
            percent(used_ratio(d)),
            inode_ratio(d).map_or_else(|| "-".to_string(), percent),
            if d.read_only { "ro" } else { "" }.to_string(),
        ]);
    }
    let mut out = fs.render();
    if !latest.block_devices.is_empty() {
        let mut dev = Table::new([
            "DEVICE",
            "READS",
            "WRITES",
            "READ",
            "WRITTEN",
            "IN FLIGHT",
            "UTIL",
        ]);
        for b in &latest.block_devices {
            dev.row([
                b.device.clone(),
                b.reads.to_string(),
                b.writes.to_string(),
                bytes(b.read_bytes),
                bytes(b.write_bytes),
                b.in_flight.to_string(),
                percent(b.utilization),
            ]);
        }
        out.push('\n');
        out.push_str(&dev.render());
    }
    out
}

/// `nodewatch disks`.
pub async fn run(channel: Channel, host: &str, output: OutputFormat) -> Result<(), CliError> {
    let (_, latest) = crate::client::get_host(channel, host).await?;
    match output {
        OutputFormat::Json => print_json(&to_json(&latest)),
        OutputFormat::Table => {
            if latest.disks.is_empty() && latest.block_devices.is_empty() {
                eprintln!("no disk data from this host yet (is the disks sampler enabled?)");
                return Ok(());
            }
            print!("{}", render(&latest));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_df() {
        let b = pb::Batch {
            disks: vec![pb::DiskUsage {
                mount_point: "/data".into(),
                device: "tmpfs".into(),
                fs_type: "tmpfs".into(),
                size_bytes: 8 << 20,
                free_bytes: 7 << 20,
                available_bytes: 7 << 20,
                inodes_total: 100,
                inodes_free: 98,
                read_only: false,
            }],
            ..Default::default()
        };
        let text = render(&b);
        assert!(text.contains("/data"), "{text}");
        assert!(text.contains("12.5%") && text.contains("2.0%"), "{text}");
        let j = to_json(&b);
        assert_eq!(j["filesystems"][0]["size_bytes"], 8 << 20);
        assert_eq!(j["filesystems"][0]["used_ratio"], 0.125);
    }
}
