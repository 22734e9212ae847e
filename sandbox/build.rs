//! Compiles the seccomp allowlists (`seccomp/rules.rs`, one row per syscall) to
//! BPF at build time (as Firecracker does), so a sandbox start only loads a ready
//! program. The programs are written to `OUT_DIR` and
//! embedded in the worker with `include_bytes!`.
//!
//! seccompiler compiles the rules into one chain of comparisons, a syscall after
//! another; each program is then put behind a binary search over the syscall
//! numbers (`tree`), which also answers the rules' `ENOSYS` calls (`clone3`). The chain as
//! seccompiler wrote it is kept beside it (`seccomp_<name>_chain.bpf`) for the
//! test that both decide alike.
//!
//! Syscall numbers come from the host's `libc`, so filters are only generated when the
//! target architecture and OS equal the host's (x86_64 or aarch64 Linux); otherwise
//! empty files are written and the worker reports seccomp as unavailable.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=seccomp/rules.rs");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR set by cargo");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    let native_build = target_os == "linux"
        && host.starts_with(&target_arch)
        && host.contains("linux")
        && (target_arch == "x86_64" || target_arch == "aarch64");
    let names = ["wasm", "native"];
    for n in names {
        let (tree, chain) = if native_build {
            #[cfg(target_os = "linux")]
            {
                filters::build(n, &target_arch)
            }
            #[cfg(not(target_os = "linux"))]
            {
                (Vec::new(), Vec::new())
            }
        } else {
            (Vec::new(), Vec::new())
        };
        for (file, bytes) in [
            (format!("seccomp_{n}.bpf"), tree),
            (format!("seccomp_{n}_chain.bpf"), chain),
        ] {
            std::fs::write(Path::new(&out).join(file), bytes).expect("write bpf to OUT_DIR");
        }
    }
}

/// The allowlists, one row per syscall.
#[cfg(target_os = "linux")]
#[path = "seccomp/rules.rs"]
mod rules;

#[cfg(target_os = "linux")]
mod filters {
    use std::collections::BTreeMap;

    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::rules::{self, Cond, Op, Profile, Width};

    fn condition(c: &Cond) -> SeccompCondition {
        let width = match c.width {
            Width::Dword => SeccompCmpArgLen::Dword,
            Width::Qword => SeccompCmpArgLen::Qword,
        };
        let op = match c.op {
            Op::Eq => SeccompCmpOp::Eq,
            Op::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
        };
        SeccompCondition::new(c.arg, width, op, c.value).expect("valid condition")
    }

    /// The rows of `profile` ("wasm" or "native"), as seccompiler's rules.
    fn allowlist(profile: &str) -> BTreeMap<i64, Vec<SeccompRule>> {
        let mut out = BTreeMap::new();
        for row in rules::RULES.iter().chain(rules::X86_64_RULES) {
            let mine = match row.profile {
                Profile::Both => true,
                Profile::Wasm => profile == "wasm",
                Profile::Native => profile == "native",
            };
            if !mine {
                continue;
            }
            assert!(
                !row.why.is_empty(),
                "syscall {} allowed without a why",
                row.nr
            );
            let alternatives = row
                .args
                .iter()
                .map(|all| {
                    SeccompRule::new(all.iter().map(condition).collect()).expect("valid rule")
                })
                .collect();
            let before = out.insert(row.nr, alternatives);
            assert!(
                before.is_none(),
                "syscall {} has two rows in {profile}",
                row.nr
            );
        }
        out
    }

    /// The program behind its search tree, and seccompiler's chain alone.
    pub fn build(profile: &str, arch: &str) -> (Vec<u8>, Vec<u8>) {
        let arch = TargetArch::try_from(arch).expect("supported arch");
        let filter = SeccompFilter::new(
            allowlist(profile),
            SeccompAction::KillProcess,
            SeccompAction::Allow,
            arch,
        )
        .expect("valid filter");
        let prog: BpfProgram = filter.try_into().expect("filter compiles");
        let chain: Vec<super::tree::Ins> = prog.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
        let errno_enosys = 0x0005_0000 | libc::ENOSYS as u32;
        let enosys: Vec<(u32, u32)> = rules::ENOSYS
            .iter()
            .map(|&nr| (nr as u32, errno_enosys))
            .collect();
        let tree = super::tree::behind_search_tree(&chain, &enosys);
        (super::tree::bytes(&tree), super::tree::bytes(&chain))
    }
}

/// A binary search by syscall number in front of seccompiler's chain.
///
/// seccompiler writes one block per syscall, one after another: `jeq nr` (on a
/// miss, on to the next block), the rules on the arguments, and at the end the
/// mismatch action. A syscall's verdict is a walk down the chain, and so is the
/// kernel's work when it attaches a filter: for each of the ~450 syscall
/// numbers it runs the filter to find those it always allows (the action
/// cache), with interrupts off; through a 550-instruction chain that took 140
/// of the 220 µs an attach took here. Behind a search the walk is logarithmic.
/// A block without argument rules becomes the search's leaf action; a block
/// with them is kept whole and jumped to; a number without a block gets the
/// mismatch action, as at the chain's end.
#[cfg(target_os = "linux")]
mod tree {
    /// code, jt, jf, k
    pub type Ins = (u16, u8, u8, u32);

    const LD_W_ABS: u16 = 0x20;
    const JMP_JA: u16 = 0x05;
    const JMP_JEQ_K: u16 = 0x15;
    const JMP_JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    /// `seccomp_data.nr`, `seccomp_data.arch`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;

    pub fn bytes(prog: &[Ins]) -> Vec<u8> {
        let mut out = Vec::with_capacity(prog.len() * 8);
        for &(code, jt, jf, k) in prog {
            out.extend_from_slice(&code.to_ne_bytes());
            out.push(jt);
            out.push(jf);
            out.extend_from_slice(&k.to_ne_bytes());
        }
        out
    }

    /// What a syscall number leads to.
    #[derive(Clone, Copy)]
    enum Leaf {
        Ret(u32),
        /// The argument rules of a block, by index.
        Body(usize),
    }

    /// `chain` behind a search tree; `extra` numbers (not in the chain) get
    /// their own action.
    pub fn behind_search_tree(chain: &[Ins], extra: &[(u32, u32)]) -> Vec<Ins> {
        // The prologue: load arch, allow only ours, load the number.
        assert!(
            chain.len() > 4
                && chain[0] == (LD_W_ABS, 0, 0, ARCH)
                && chain[1].0 == JMP_JEQ_K
                && chain[1].1 == 1
                && chain[1].2 == 0
                && chain[2].0 == RET_K
                && chain[3] == (LD_W_ABS, 0, 0, NR),
            "seccompiler's prologue changed: {:?}",
            &chain[..chain.len().min(4)]
        );
        // Walk the blocks along their miss jumps.
        let mut leaves: Vec<(u32, Leaf)> = Vec::new();
        let mut bodies: Vec<Vec<Ins>> = Vec::new();
        // The chain ends on the mismatch action.
        let Some(&(RET_K, 0, 0, default)) = chain.last() else {
            panic!(
                "seccompiler's chain does not end on a return: {:?}",
                chain.last()
            );
        };
        let mut p = 4;
        loop {
            let (code, jt, jf, k) = chain[p];
            if code == RET_K {
                assert_eq!(p, chain.len() - 1, "a return between seccompiler's blocks");
                break;
            }
            // jeq nr, 0, 1; ja body; ja on (through trampolines between the
            // rules) to the next block; body...
            assert!(
                code == JMP_JEQ_K && (jt, jf) == (0, 1) && chain[p + 1] == (JMP_JA, 0, 0, 1),
                "seccompiler's block layout changed at {p}: {:?}",
                &chain[p..(p + 2).min(chain.len())]
            );
            let mut next = p + 2;
            while chain[next].0 == JMP_JA {
                next += 1 + chain[next].3 as usize;
            }
            // What the block's rules reach stays in the block (a failure ends on
            // its own mismatch action), so it can move as a whole; the
            // trampolines of the miss path are unreachable from it and become
            // the mismatch action too.
            let mut body = chain[p + 3..next].to_vec();
            let mut reached = vec![false; body.len()];
            let mut todo = vec![0];
            while let Some(i) = todo.pop() {
                assert!(
                    i < body.len(),
                    "a rule of syscall {k} jumps out of its block"
                );
                if std::mem::replace(&mut reached[i], true) {
                    continue;
                }
                let (c, jt, jf, jk) = body[i];
                match c {
                    RET_K => {}
                    JMP_JA => todo.push(i + 1 + jk as usize),
                    c if c & 0x07 == 0x05 => {
                        todo.extend([i + 1 + jt as usize, i + 1 + jf as usize])
                    }
                    _ => todo.push(i + 1),
                }
            }
            for (ins, reached) in body.iter_mut().zip(reached) {
                if !reached {
                    *ins = (RET_K, 0, 0, default);
                }
            }
            let leaf = match body[..] {
                [(RET_K, 0, 0, action), ..] => Leaf::Ret(action),
                _ => {
                    bodies.push(body);
                    Leaf::Body(bodies.len() - 1)
                }
            };
            leaves.push((k, leaf));
            p = next;
        }
        for &(nr, action) in extra {
            assert!(
                leaves.iter().all(|(n, _)| *n != nr),
                "syscall {nr} is in the chain already"
            );
            leaves.push((nr, Leaf::Ret(action)));
        }
        leaves.sort_by_key(|(nr, _)| *nr);

        // The search, with jumps to bodies left to resolve (position, body).
        let mut search = Vec::new();
        let mut to_body = Vec::new();
        emit(&leaves, default, &mut search, &mut to_body);
        let start = 4 + search.len();
        let mut body_at = Vec::new();
        let mut at = start;
        for b in &bodies {
            body_at.push(at);
            at += b.len();
        }
        for (pos, body) in to_body {
            let abs = 4 + pos;
            search[pos].3 = u32::try_from(body_at[body] - (abs + 1)).expect("jump fits");
        }
        let mut out = chain[..4].to_vec();
        out.extend(search);
        for b in bodies {
            out.extend(b);
        }
        assert!(out.len() <= 4096, "filter too long: {}", out.len());
        out
    }

    /// Search `leaves` (sorted by number): three or fewer are compared in turn,
    /// more are split at the middle with `jge`.
    fn emit(
        leaves: &[(u32, Leaf)],
        default: u32,
        out: &mut Vec<Ins>,
        to_body: &mut Vec<(usize, usize)>,
    ) {
        if leaves.len() <= 3 {
            for &(nr, leaf) in leaves {
                out.push((JMP_JEQ_K, 0, 1, nr));
                match leaf {
                    Leaf::Ret(action) => out.push((RET_K, 0, 0, action)),
                    Leaf::Body(b) => {
                        to_body.push((out.len(), b));
                        out.push((JMP_JA, 0, 0, 0));
                    }
                }
            }
            out.push((RET_K, 0, 0, default));
            return;
        }
        let mid = leaves.len() / 2;
        let node = out.len();
        out.push((JMP_JGE_K, 0, 0, leaves[mid].0));
        emit(&leaves[..mid], default, out, to_body);
        let skip = out.len() - node - 1;
        out[node].1 = u8::try_from(skip).expect("the lower half of a search fits a short jump");
        emit(&leaves[mid..], default, out, to_body);
    }
}
