//! nodewatch syscall-latency programs. Built for the BPF target by the
//! agent's build script; on the host this is an empty binary.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod progs;
