//! Reference programs on the same syscall hooks as the tracer (empty
//! programs, a latency histogram without cgroups, two clock reads), attached
//! by `examples/ebpf_attach.rs` for the syscall benchmark's comparison.

use aya::Ebpf;

use super::attach::{Hook, Links, ProgramSet, attach, load_object};
use super::config::HookChoice;
use super::error::EbpfError;

/// Reference programs attached on the syscall hooks, for benchmarks (the
/// agent itself uses [`super::SyscallTracer`]). Detached when dropped.
#[derive(Debug)]
pub struct ReferencePrograms {
    ebpf: Ebpf,
    links: Option<Links>,
}

impl ReferencePrograms {
    /// Loads the object and attaches the given set.
    pub fn attach(set: ProgramSet, hook: HookChoice) -> Result<Self, EbpfError> {
        let mut ebpf = load_object()?;
        let links = attach(&mut ebpf, hook, set)?;
        Ok(Self {
            ebpf,
            links: Some(links),
        })
    }

    /// Hook in use.
    pub fn hook(&self) -> Option<Hook> {
        self.links.as_ref().map(|l| l.hook)
    }
}

impl Drop for ReferencePrograms {
    fn drop(&mut self) {
        if let Some(l) = self.links.take() {
            l.detach(&mut self.ebpf);
        }
    }
}
