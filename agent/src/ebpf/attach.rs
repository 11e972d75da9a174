//! Loading the embedded object and attaching its enter/exit programs to
//! the syscall tracepoints (`tp_btf`, falling back to raw tracepoints), and
//! detaching them.

use aya::programs::{BtfTracePoint, RawTracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use nodewatch_agent_ebpf::programs as names;
use nodewatch_proto::daemon::error_chain as chain;
use tracing::info;

use super::config::HookChoice;
use super::error::EbpfError;
use crate::sys::rlimit::lift_memlock_limit;

/// The compiled eBPF object (programs and maps of `nodewatch-agent-ebpf`).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nodewatch-ebpf"));

/// Hook flavour in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// BTF-typed raw tracepoints.
    TpBtf,
    /// Raw tracepoints.
    RawTracepoint,
}

impl Hook {
    /// Name as reported in `EbpfStats.hook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TpBtf => "tp_btf",
            Hook::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities needed to load tracing programs.
fn check_capabilities() -> Result<(), EbpfError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| EbpfError::Read("/proc/self/status", e))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Ok(());
    }
    if !has(CAP_BPF) {
        return Err(EbpfError::MissingCapability("CAP_BPF"));
    }
    if !has(CAP_PERFMON) {
        return Err(EbpfError::MissingCapability("CAP_PERFMON"));
    }
    Ok(())
}

/// Number of thread ids the kernel can hand out (`kernel.pid_max`).
fn pid_max() -> Result<u32, EbpfError> {
    let s = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .map_err(|e| EbpfError::Read("/proc/sys/kernel/pid_max", e))?;
    Ok(s.trim()
        .parse::<u32>()
        .unwrap_or(4_194_304)
        .clamp(1024, 1 << 22))
}

/// Loads the embedded object with the per-thread array sized for `pid_max`.
pub(crate) fn load_object() -> Result<Ebpf, EbpfError> {
    check_capabilities()?;
    lift_memlock_limit();
    let pid_max = pid_max()?;
    EbpfLoader::new()
        .map_max_entries(nodewatch_agent_ebpf::MAP_THREADS, pid_max)
        .load(EBPF_OBJECT)
        .map_err(|e| EbpfError::Load(chain(&e)))
}

/// Loads and attaches the enter/exit pair `(enter, exit)` of the given hook.
fn attach_pair(ebpf: &mut Ebpf, hook: Hook, enter: &str, exit: &str) -> Result<Links, EbpfError> {
    // Kernel BTF is parsed only when a program still has to be loaded: a
    // re-attach after a back-off reuses the loaded programs.
    let mut btf: Option<Btf> = None;
    let mut ids = Vec::with_capacity(2);
    for (name, tp) in [(enter, "sys_enter"), (exit, "sys_exit")] {
        let prog = ebpf
            .program_mut(name)
            .ok_or_else(|| EbpfError::Load(format!("program {name} missing from the object")))?;
        match hook {
            Hook::TpBtf => {
                let p: &mut BtfTracePoint =
                    prog.try_into().map_err(|e| EbpfError::Load(chain(&e)))?;
                if p.fd().is_err() {
                    if btf.is_none() {
                        btf = Some(Btf::from_sys_fs().map_err(|_| EbpfError::NoBtf)?);
                    }
                    if let Some(btf) = &btf {
                        p.load(tp, btf).map_err(|e| EbpfError::Load(chain(&e)))?;
                    }
                }
                ids.push(LinkId::Btf(
                    p.attach().map_err(|e| EbpfError::Attach(chain(&e)))?,
                ));
            }
            Hook::RawTracepoint => {
                let p: &mut RawTracePoint =
                    prog.try_into().map_err(|e| EbpfError::Load(chain(&e)))?;
                if p.fd().is_err() {
                    p.load().map_err(|e| EbpfError::Load(chain(&e)))?;
                }
                ids.push(LinkId::Raw(
                    p.attach(tp).map_err(|e| EbpfError::Attach(chain(&e)))?,
                ));
            }
        }
    }
    Ok(Links {
        hook,
        names: [enter.to_string(), exit.to_string()],
        ids,
    })
}

/// One attached program, to detach it.
#[derive(Debug)]
enum LinkId {
    Btf(aya::programs::tp_btf::BtfTracePointLinkId),
    Raw(aya::programs::raw_trace_point::RawTracePointLinkId),
}

/// Attached enter/exit programs.
#[derive(Debug)]
pub(crate) struct Links {
    /// The hook they are attached to.
    pub(crate) hook: Hook,
    /// Program names (enter, exit), as in the object.
    pub(crate) names: [String; 2],
    ids: Vec<LinkId>,
}

impl Links {
    /// Detaches both programs (they stay loaded, for a later re-attach).
    pub(crate) fn detach(self, ebpf: &mut Ebpf) {
        for (name, id) in self.names.iter().zip(self.ids) {
            let Some(prog) = ebpf.program_mut(name) else {
                continue;
            };
            match id {
                LinkId::Btf(id) => {
                    if let Ok(p) = <&mut BtfTracePoint>::try_from(prog) {
                        let _ = p.detach(id);
                    }
                }
                LinkId::Raw(id) => {
                    if let Ok(p) = <&mut RawTracePoint>::try_from(prog) {
                        let _ = p.detach(id);
                    }
                }
            }
        }
    }
}

/// Attaches `choice`'s hook, falling back from tp_btf to raw tracepoints in
/// `Auto` mode; `set` picks nodewatch's programs or a reference set.
pub(crate) fn attach(
    ebpf: &mut Ebpf,
    choice: HookChoice,
    set: ProgramSet,
) -> Result<Links, EbpfError> {
    let links = attach_hook(ebpf, choice, set);
    // Loading parses the kernel's BTF (tens of MiB while it lasts). It is freed
    // at once, but a thread's malloc arena keeps the touched pages unless told
    // to give them back; without this a re-attach after a back-off leaves the
    // agent ~20 MiB larger for good.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    links
}

/// Which programs of the object to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramSet {
    /// nodewatch's programs (what the agent attaches).
    Full,
    /// Reference: empty programs on the same hooks, the cost floor of the mechanism.
    Empty,
    /// Reference: the latency histogram per syscall without cgroup attribution.
    Plain,
    /// Reference: one clock read on enter and one on exit, nothing else.
    Clock,
}

impl ProgramSet {
    /// `((enter, exit) for tp_btf, (enter, exit) for raw tracepoints)`.
    fn names(self) -> ((&'static str, &'static str), (&'static str, &'static str)) {
        match self {
            ProgramSet::Full => (
                (names::ENTER_BTF, names::EXIT_BTF),
                (names::ENTER_RAW, names::EXIT_RAW),
            ),
            ProgramSet::Empty => (
                (names::EMPTY_ENTER_BTF, names::EMPTY_EXIT_BTF),
                (names::EMPTY_ENTER_RAW, names::EMPTY_EXIT_RAW),
            ),
            ProgramSet::Plain => (
                (names::PLAIN_ENTER_BTF, names::PLAIN_EXIT_BTF),
                (names::PLAIN_ENTER_RAW, names::PLAIN_EXIT_RAW),
            ),
            ProgramSet::Clock => (
                (names::CLOCK_ENTER_BTF, names::CLOCK_EXIT_BTF),
                (names::CLOCK_ENTER_RAW, names::CLOCK_EXIT_RAW),
            ),
        }
    }
}

fn attach_hook(ebpf: &mut Ebpf, choice: HookChoice, set: ProgramSet) -> Result<Links, EbpfError> {
    let (btf_pair, raw_pair) = set.names();
    match choice {
        HookChoice::TpBtf => attach_pair(ebpf, Hook::TpBtf, btf_pair.0, btf_pair.1),
        HookChoice::RawTracepoint => attach_pair(ebpf, Hook::RawTracepoint, raw_pair.0, raw_pair.1),
        HookChoice::Auto => match attach_pair(ebpf, Hook::TpBtf, btf_pair.0, btf_pair.1) {
            Ok(l) => Ok(l),
            Err(e @ EbpfError::MissingCapability(_)) => Err(e),
            Err(e) => {
                info!("ebpf: tp_btf unavailable ({e}); using raw tracepoints");
                attach_pair(ebpf, Hook::RawTracepoint, raw_pair.0, raw_pair.1)
            }
        },
    }
}

/// The choice that attaches `hook` again (no fallback).
pub(crate) fn hook_choice(hook: Hook) -> HookChoice {
    match hook {
        Hook::TpBtf => HookChoice::TpBtf,
        Hook::RawTracepoint => HookChoice::RawTracepoint,
    }
}
