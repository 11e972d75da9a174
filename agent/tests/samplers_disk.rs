//! Scenario: a tmpfs of known size holding a file of known size gives exact
//! disk figures; a bind mount of it is reported once.

use std::process::Command;

use nodewatch_agent::samplers::Sampler as _;
use nodewatch_agent::samplers::disk::DiskSampler;
use nodewatch_proto::pb;

mod support;

/// Unmounts on drop, so a failed assertion still cleans up.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn tmpfs_of_known_size_gives_exact_figures() {
    if !support::is_root() {
        println!("skipping: mounting tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    let bind = dir.path().join("bind");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&bind).unwrap();
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=8m,nr_inodes=100",
            "nodewatch-test",
        ])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    if !ok {
        println!("skipping: mount -t tmpfs failed");
        return;
    }
    let _m = Mount(mnt.clone());
    std::fs::write(mnt.join("data"), vec![7u8; 1024 * 1024]).unwrap();
    assert!(
        Command::new("mount")
            .arg("--bind")
            .arg(&mnt)
            .arg(&bind)
            .status()
            .unwrap()
            .success()
    );
    let _b = Mount(bind.clone());

    let mut sampler = DiskSampler::new(false).unwrap();
    let mut batch = pb::Batch::default();
    sampler.sample(&mut batch).unwrap();
    let ours: Vec<&pb::DiskUsage> = batch
        .disks
        .iter()
        .filter(|d| d.device == "nodewatch-test")
        .collect();
    assert_eq!(ours.len(), 1, "bind mount reported once: {ours:?}");
    let d = ours[0];
    assert_eq!(d.mount_point, mnt.to_str().unwrap());
    assert_eq!(d.fs_type, "tmpfs");
    assert_eq!(d.size_bytes, 8 * 1024 * 1024);
    assert_eq!(d.free_bytes, 7 * 1024 * 1024);
    assert_eq!(d.available_bytes, 7 * 1024 * 1024);
    assert_eq!(d.inodes_total, 100);
    // The root directory and the file.
    assert_eq!(d.inodes_free, 98);
    assert!(!d.read_only);
    assert!(
        batch
            .disks
            .iter()
            .all(|d| d.fs_type != "proc" && d.fs_type != "sysfs")
    );
}
