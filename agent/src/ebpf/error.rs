//! Why eBPF is not in use: the one-line reason shown everywhere
//! (`ebpf: unavailable (<reason>)`, `Hello.capabilities.ebpf`).

/// Where the kernel exposes its BTF (what `Btf::from_sys_fs` reads).
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why eBPF is not in use.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// Turned off by configuration.
    #[error("disabled by configuration")]
    Disabled,
    /// A capability needed to load tracing programs is missing.
    #[error("missing {0}")]
    MissingCapability(&'static str),
    /// `tp_btf` was required but the kernel exposes no BTF.
    #[error("no BTF at {VMLINUX_BTF}")]
    NoBtf,
    /// A kernel setting could not be read.
    #[error("cannot read {0}: {1}")]
    Read(&'static str, std::io::Error),
    /// The object or a program could not be loaded.
    #[error("cannot load the eBPF programs: {0}")]
    Load(String),
    /// The programs could not be attached.
    #[error("cannot attach to the syscall tracepoints: {0}")]
    Attach(String),
    /// A map is missing or has an unexpected type.
    #[error("eBPF map {0}: {1}")]
    Map(&'static str, String),
}
