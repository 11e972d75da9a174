//! Builds the eBPF programs (crate `nodewatch-agent-ebpf`, BPF target) with
//! aya-build; the agent embeds the resulting object. The eBPF toolchain
//! (nightly with rust-src, bpf-linker) is installed by `cargo xtask bootstrap`.

use anyhow::{Context as _, anyhow, bail};

fn main() -> anyhow::Result<()> {
    if which::which("bpf-linker").is_err() {
        bail!(
            "bpf-linker not found: the agent embeds eBPF programs; run `cargo xtask bootstrap` (or any `cargo xtask` build command) to install the eBPF toolchain"
        );
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "nodewatch-agent-ebpf")
        .ok_or_else(|| anyhow!("package nodewatch-agent-ebpf not found in the workspace"))?;
    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent of {}", package.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF programs (run `cargo xtask bootstrap` if the toolchain is missing)")
}
