//! Makes sure the eBPF toolchain is present: nightly with rust-src, LLVM 22
//! development files, and bpf-linker built against them. Idempotent and silent
//! when everything is there; one progress line per step when installing.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// LLVM major version matching the nightly toolchain's LLVM and bpf-linker's feature.
const LLVM_MAJOR: u32 = 22;
/// bpf-linker release line that links against a system LLVM 22.
const BPF_LINKER_VERSION: &str = "~0.13";
/// Debian packages holding LLVM's development files and what linking against them needs.
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

fn llvm_prefix() -> String {
    format!("/usr/lib/llvm-{LLVM_MAJOR}")
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(step: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("bootstrap: {step}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("bootstrap step failed ({step}): {cmd:?} exited with {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Ensures every tool the build needs; installs what is missing.
pub fn ensure() -> anyhow::Result<()> {
    ensure_nightly_rust_src()?;
    ensure_llvm()?;
    ensure_bpf_linker()?;
    Ok(())
}

fn ensure_nightly_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    match installed {
        Some(list) if list.lines().any(|l| l.starts_with("rust-src")) => Ok(()),
        Some(_) => run(
            "adding rust-src to the nightly toolchain (eBPF programs build core from source)",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        ),
        None => run(
            "installing the nightly toolchain with rust-src (eBPF programs need it)",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
        ),
    }
}

fn llvm_present() -> bool {
    let prefix = llvm_prefix();
    Path::new(&format!("{prefix}/bin/llvm-config")).exists()
        && Path::new(&format!("{prefix}/lib/libLLVM.so")).exists()
        && Path::new(&format!("{prefix}/lib/libPolly.a")).exists()
}

fn ensure_llvm() -> anyhow::Result<()> {
    if llvm_present() {
        return Ok(());
    }
    let install = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
        LLVM_PACKAGES.join(" ")
    );
    if !is_root() || !quiet(Command::new("apt-get").arg("--version")) {
        bail!(
            "LLVM {LLVM_MAJOR} development files are missing (needed to build bpf-linker).\n\
             Install them, then run this command again:\n    sudo sh -c '{install}'"
        );
    }
    run(
        "updating apt package lists",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("installing {}", LLVM_PACKAGES.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(LLVM_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !llvm_present() {
        bail!("LLVM {LLVM_MAJOR} still missing after installing {LLVM_PACKAGES:?}");
    }
    Ok(())
}

/// Installs Debian packages a benchmark runs against (root, apt-get), with
/// one line saying so; a clear error when that is not possible.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let list = packages.join(" ");
    eprintln!("installing {list} (apt-get)");
    let install = || -> anyhow::Result<bool> {
        Ok(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .context("cannot run apt-get")?
            .success())
    };
    if install()? {
        return Ok(());
    }
    // A fresh machine may have no package lists yet: update once and retry.
    eprintln!("updating apt package lists and retrying");
    let _ = Command::new("apt-get")
        .args(["update", "-qq"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    if !install()? {
        bail!("apt-get install {list} failed (run as root)");
    }
    Ok(())
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if quiet(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    let prefix = llvm_prefix();
    let path = format!("{prefix}/bin:{}", std::env::var("PATH").unwrap_or_default());
    run(
        &format!("installing bpf-linker against LLVM {LLVM_MAJOR} (about 2 minutes)"),
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("LLVM_PREFIX", &prefix)
            .env("PATH", path),
    )?;
    if !quiet(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker was installed but is not on PATH; add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// Python packages the reflection test drives the collector with.
const PYTHON_PACKAGES: &[&str] = &["grpcio", "grpcio-reflection", "protobuf"];

/// Ensures the Python gRPC reflection client used by the tests.
pub fn ensure_python_grpc() -> anyhow::Result<()> {
    if quiet(Command::new("python3").args([
        "-c",
        "import grpc, grpc_reflection.v1alpha.reflection_pb2, google.protobuf",
    ])) {
        return Ok(());
    }
    if !quiet(Command::new("python3").arg("--version")) {
        eprintln!("bootstrap: python3 not found; the reflection test will skip");
        return Ok(());
    }
    run(
        "installing Python gRPC reflection client for the tests (grpcio, grpcio-reflection)",
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
            ])
            .args(PYTHON_PACKAGES),
    )
}
