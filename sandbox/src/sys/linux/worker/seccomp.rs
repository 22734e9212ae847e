//! Attaching the seccomp filters that `build.rs` compiled (the rules:
//! `sandbox/seccomp/rules.rs`).

use super::super::errno;

pub(super) fn bpf(bytes: &[u8]) -> Vec<libc::sock_filter> {
    bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// Install a prebuilt filter on every thread. Returns false when no filter was
/// built for this target. (The wasm runtime's; a native task installs its
/// filter in `task_child`.)
#[cfg(feature = "wasm")]
pub(super) fn apply_seccomp(filter: &[u8]) -> Result<bool, String> {
    if filter.is_empty() {
        return Ok(false);
    }
    install_filter(&fprog(&bpf(filter))).map_err(|e| e.to_string())?;
    Ok(true)
}

pub(super) fn fprog(filter: &[libc::sock_filter]) -> libc::sock_fprog {
    libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    }
}

/// Install one seccomp filter on every thread of this process; no allocation,
/// so a child sharing its parent's memory may call it (see [`exec_task`]).
pub(super) fn install_filter(prog: &libc::sock_fprog) -> Result<(), std::io::Error> {
    // SAFETY: seccomp(2) with a filter program that outlives the call; the
    // caller has set no_new_privs.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            prog as *const libc::sock_fprog,
        )
    };
    match r {
        0 => Ok(()),
        r if r > 0 => Err(std::io::Error::other(format!(
            "thread {r} could not be synchronised"
        ))),
        _ => Err(errno()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{SECCOMP_NATIVE, SECCOMP_WASM};
    use super::*;

    static WASM_CHAIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_wasm_chain.bpf"));
    static NATIVE_CHAIN: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/seccomp_native_chain.bpf"));

    /// A classic BPF machine for seccomp programs: the kernel's semantics for
    /// the instructions seccomp allows (loads from `seccomp_data`, ALU and
    /// jumps with constants, returns).
    fn run(prog: &[libc::sock_filter], data: &[u32; 16]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            let k = i.k;
            pc += 1;
            match i.code {
                0x20 => a = data[k as usize / 4],                        // ld [k]
                0x54 => a &= k,                                          // and #k
                0x05 => pc += k as usize,                                // ja
                0x15 => pc += if a == k { i.jt } else { i.jf } as usize, // jeq
                0x25 => pc += if a > k { i.jt } else { i.jf } as usize,  // jgt
                0x35 => pc += if a >= k { i.jt } else { i.jf } as usize, // jge
                0x45 => pc += if a & k != 0 { i.jt } else { i.jf } as usize, // jset
                0x06 => return k,                                        // ret #k
                c => panic!("instruction {c:#x} at {} not interpreted", pc - 1),
            }
        }
    }

    /// The search tree in front of seccompiler's chain decides every syscall
    /// number, and every argument value the rules name, as the chain does;
    /// only `clone3` differs: ENOSYS, so libc falls back to `clone`.
    #[test]
    fn the_search_tree_decides_as_seccompilers_chain() {
        for (name, tree, chain) in [
            ("wasm", SECCOMP_WASM, WASM_CHAIN),
            ("native", SECCOMP_NATIVE, NATIVE_CHAIN),
        ] {
            if tree.is_empty() {
                return; // no filters for this target
            }
            let (tree, chain) = (bpf(tree), bpf(chain));
            assert!(
                tree.len() < chain.len(),
                "{name}: {} vs {}",
                tree.len(),
                chain.len()
            );
            let arch = chain[1].k;
            // Argument values worth trying: every constant in the program, its
            // neighbours, and a few others.
            let mut values: Vec<u32> = vec![0, 1, u32::MAX, 0x8000_0000];
            for i in &chain {
                values.extend([i.k, i.k.wrapping_add(1), i.k.wrapping_sub(1)]);
            }
            values.sort_unstable();
            values.dedup();
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let numbers = (0..1024).chain((0..1024).map(|n| n | 0x4000_0000));
            for nr in numbers {
                for round in 0..64 {
                    let mut data = [0u32; 16];
                    data[0] = nr;
                    data[1] = if round == 63 { 0x4000_0003 } else { arch };
                    for slot in &mut data[4..] {
                        let r = next();
                        *slot = values[(r % values.len() as u64) as usize];
                    }
                    let (t, c) = (run(&tree, &data), run(&chain, &data));
                    if nr == libc::SYS_clone3 as u32 && data[1] == arch {
                        assert_eq!(t, 0x0005_0000 | libc::ENOSYS as u32, "{name}: clone3");
                    } else {
                        assert_eq!(t, c, "{name}: syscall {nr:#x}, data {data:x?}");
                    }
                }
            }
        }
    }
}
