//! Reading whole BPF maps (and clearing arrays) with a few `BPF_MAP_*_BATCH`
//! syscalls instead of one syscall per element.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Elements written per `BPF_MAP_UPDATE_BATCH` call by [`zero_array`].
const ZERO_CHUNK: u32 = 16_384;

/// Sets every element of an array map (`entries` elements of `value_len`
/// bytes, not per-CPU) to zeros, `ZERO_CHUNK` elements per syscall.
pub(crate) fn zero_array(fd: BorrowedFd<'_>, value_len: usize, entries: u32) -> io::Result<()> {
    let chunk = ZERO_CHUNK.min(entries.max(1));
    let values = vec![0u8; value_len * chunk as usize];
    let mut keys: Vec<u32> = Vec::with_capacity(chunk as usize);
    let mut start = 0u32;
    while start < entries {
        let n = chunk.min(entries - start);
        keys.clear();
        keys.extend(start..start + n);
        let mut done = 0u32;
        // Each call writes at least one element or fails, so `n` calls bound it.
        for _ in 0..n {
            if done >= n {
                break;
            }
            let mut attr = BatchAttr {
                keys: keys[done as usize..].as_ptr() as u64,
                values: values[done as usize * value_len..].as_ptr() as u64,
                count: n - done,
                map_fd: fd.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: `attr` points at `count` keys and `count` values of
            // `value_len` bytes, alive for the call.
            let rc = unsafe { bpf(BPF_MAP_UPDATE_BATCH, &mut attr) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            if attr.count == 0 {
                return Err(io::Error::other("BPF_MAP_UPDATE_BATCH wrote nothing"));
            }
            done += attr.count;
        }
        start += n;
    }
    Ok(())
}

/// `union bpf_attr`, batch member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `bpf(2)` system call with a batch command.
///
/// # Safety
/// The pointers in `attr` must be valid for what `cmd` reads and writes.
unsafe fn bpf(cmd: libc::c_long, attr: &mut BatchAttr) -> libc::c_long {
    // SAFETY: the caller vouches for the pointers inside `attr`; `attr`
    // itself is valid for the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    }
}

/// Reads up to `max` elements of the map into `keys` / `values` (resized to
/// fit), `value_len` bytes per element (for per-CPU maps: the value size
/// rounded up to 8, times the possible CPUs). With `delete`, the elements are
/// removed as they are read (hash maps). Returns how many elements were read.
pub(crate) fn lookup(
    fd: BorrowedFd<'_>,
    delete: bool,
    key_len: usize,
    value_len: usize,
    max: usize,
    keys: &mut Vec<u8>,
    values: &mut Vec<u8>,
) -> io::Result<usize> {
    keys.resize(key_len * max, 0);
    values.resize(value_len * max, 0);
    let cmd = if delete {
        BPF_MAP_LOOKUP_AND_DELETE_BATCH
    } else {
        BPF_MAP_LOOKUP_BATCH
    };
    let mut got = 0usize;
    let mut token_in = [0u8; 8];
    let mut token_out = [0u8; 8];
    let mut first = true;
    // Each round reads at least one element or ends, so `max + 1` rounds bound it.
    for _ in 0..=max {
        if got >= max {
            break;
        }
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                token_in.as_mut_ptr() as u64
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys[got * key_len..].as_mut_ptr() as u64,
            values: values[got * value_len..].as_mut_ptr() as u64,
            count: u32::try_from(max - got).unwrap_or(u32::MAX),
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` points at buffers large enough for `count` keys and
        // values and at two 8-byte batch tokens, all alive for the call.
        let rc = unsafe { bpf(cmd, &mut attr) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                got += attr.count as usize;
                break;
            }
            return Err(err);
        }
        if attr.count == 0 {
            break;
        }
        got += attr.count as usize;
        token_in = token_out;
        first = false;
    }
    Ok(got.min(max))
}
