//! Compiles the seccomp allowlists to BPF at build time (as Firecracker does), so a
//! sandbox start only loads a ready program. The programs are written to `OUT_DIR` and
//! embedded in the worker with `include_bytes!`.
//!
//! Syscall numbers come from the host's `libc`, so filters are only generated when the
//! target architecture and OS equal the host's (x86_64 or aarch64 Linux); otherwise
//! empty files are written and the worker reports seccomp as unavailable.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::env::var("OUT_DIR").expect("OUT_DIR set by cargo");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    let native_build = target_os == "linux"
        && host.starts_with(&target_arch)
        && host.contains("linux")
        && (target_arch == "x86_64" || target_arch == "aarch64");
    let names = ["wasm", "native", "clone3"];
    for n in names {
        let bytes = if native_build {
            #[cfg(target_os = "linux")]
            {
                filters::build(n, &target_arch)
            }
            #[cfg(not(target_os = "linux"))]
            {
                Vec::new()
            }
        } else {
            Vec::new()
        };
        std::fs::write(Path::new(&out).join(format!("seccomp_{n}.bpf")), bytes)
            .expect("write bpf to OUT_DIR");
    }
}

#[cfg(target_os = "linux")]
mod filters {
    use std::collections::BTreeMap;

    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    /// Namespace-creating clone flags: never allowed.
    const NS_FLAGS: u64 = (libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP) as u64;

    /// What the worker needs after confinement: wasmtime, WASI files under the preopens,
    /// tokio's threads, memory management and signals used for traps.
    fn common() -> Vec<i64> {
        let mut v = vec![
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_close,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
            libc::SYS_lseek,
            libc::SYS_getdents64,
            libc::SYS_mkdirat,
            libc::SYS_unlinkat,
            libc::SYS_renameat2,
            libc::SYS_readlinkat,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_ftruncate,
            libc::SYS_fcntl,
            libc::SYS_fadvise64,
            libc::SYS_utimensat,
            libc::SYS_faccessat,
            libc::SYS_faccessat2,
            libc::SYS_fstatfs,
            libc::SYS_statfs,
            libc::SYS_dup,
            libc::SYS_dup3,
            libc::SYS_pipe2,
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mprotect,
            libc::SYS_mremap,
            libc::SYS_madvise,
            libc::SYS_brk,
            libc::SYS_futex,
            libc::SYS_sched_yield,
            libc::SYS_sched_getaffinity,
            libc::SYS_nanosleep,
            libc::SYS_clock_nanosleep,
            libc::SYS_clock_gettime,
            libc::SYS_clock_getres,
            libc::SYS_gettimeofday,
            libc::SYS_rt_sigaction,
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_getpid,
            libc::SYS_gettid,
            libc::SYS_tgkill,
            libc::SYS_getrandom,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
            libc::SYS_epoll_pwait,
            libc::SYS_eventfd2,
            libc::SYS_ppoll,
            libc::SYS_getuid,
            libc::SYS_geteuid,
            libc::SYS_getgid,
            libc::SYS_getegid,
            libc::SYS_uname,
            libc::SYS_prlimit64,
            libc::SYS_getrusage,
            libc::SYS_membarrier,
            libc::SYS_set_tid_address,
            // wasmtime's copy-on-write memory images
            libc::SYS_memfd_create,
        ];
        #[cfg(target_arch = "x86_64")]
        v.extend([
            libc::SYS_epoll_wait,
            libc::SYS_pause,
            libc::SYS_poll,
            libc::SYS_arch_prctl,
            libc::SYS_access,
            libc::SYS_readlink,
            libc::SYS_stat,
            libc::SYS_lstat,
            libc::SYS_open,
            libc::SYS_mkdir,
            libc::SYS_unlink,
            libc::SYS_rename,
        ]);
        v
    }

    fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).expect("valid condition")
    }

    pub fn build(profile: &str, arch: &str) -> Vec<u8> {
        let arch = TargetArch::try_from(arch).expect("supported arch");
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        let (mismatch, matched) = if profile == "clone3" {
            // Second filter: clone3's flags sit in a struct the filter cannot read, so
            // it answers ENOSYS and libc falls back to clone, whose flags are checked.
            rules.insert(libc::SYS_clone3, vec![]);
            (
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
            )
        } else {
            for nr in common() {
                rules.insert(nr, vec![]);
            }
            // clone3 is allowed here only so the second filter can turn it into ENOSYS.
            rules.insert(libc::SYS_clone3, vec![]);
            // ioctl: only FIONBIO, FIOCLEX and TCGETS (isatty probes).
            rules.insert(
                libc::SYS_ioctl,
                [libc::FIONBIO, libc::FIOCLEX, libc::TCGETS]
                    .into_iter()
                    .map(|c| {
                        SeccompRule::new(vec![
                            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, c)
                                .expect("valid condition"),
                        ])
                        .expect("valid rule")
                    })
                    .collect(),
            );
            // prctl: thread names only.
            rules.insert(
                libc::SYS_prctl,
                [libc::PR_SET_NAME, libc::PR_GET_NAME]
                    .into_iter()
                    .map(|o| {
                        SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, o as u64)])
                            .expect("valid rule")
                    })
                    .collect(),
            );
            // socketpair: AF_UNIX only. tokio's signal driver (compiled in when
            // any crate of a workspace build enables tokio's `signal` feature)
            // makes a local pair for its wake-ups; a local pair reaches nothing.
            rules.insert(
                libc::SYS_socketpair,
                vec![
                    SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)])
                        .expect("valid rule"),
                ],
            );
            let clone_rule = if profile == "wasm" {
                // Threads only (CLONE_THREAD set), never namespaces.
                let mask = NS_FLAGS | libc::CLONE_THREAD as u64;
                cond(0, SeccompCmpOp::MaskedEq(mask), libc::CLONE_THREAD as u64)
            } else {
                // Native programs may fork (the pids limit bounds them), never create
                // namespaces.
                cond(0, SeccompCmpOp::MaskedEq(NS_FLAGS), 0)
            };
            rules.insert(
                libc::SYS_clone,
                vec![SeccompRule::new(vec![clone_rule]).expect("valid rule")],
            );
            if profile == "native" {
                for nr in [
                    libc::SYS_execve,
                    libc::SYS_wait4,
                    libc::SYS_getppid,
                    libc::SYS_getpgid,
                    libc::SYS_getcwd,
                    libc::SYS_chdir,
                ] {
                    rules.insert(nr, vec![]);
                }
                #[cfg(target_arch = "x86_64")]
                for nr in [libc::SYS_fork, libc::SYS_vfork] {
                    rules.insert(nr, vec![]);
                }
                // Lowering itself to where it already is: the task's process
                // installs these filters at the caller's priority (attaching one
                // JIT-compiles it) and only then drops to `SCHED_IDLE` and the
                // idle I/O class, before its exec. Nothing else is allowed, so a
                // task cannot raise itself.
                let dword = |arg, value: u64| {
                    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                        .expect("valid condition")
                };
                rules.insert(
                    libc::SYS_sched_setscheduler,
                    vec![
                        SeccompRule::new(vec![dword(0, 0), dword(1, libc::SCHED_IDLE as u64)])
                            .expect("valid rule"),
                    ],
                );
                // ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13)
                rules.insert(
                    libc::SYS_ioprio_set,
                    vec![
                        SeccompRule::new(vec![dword(0, 1), dword(1, 0), dword(2, 3 << 13)])
                            .expect("valid rule"),
                    ],
                );
            }
            (SeccompAction::KillProcess, SeccompAction::Allow)
        };
        let filter = SeccompFilter::new(rules, mismatch, matched, arch).expect("valid filter");
        let prog: BpfProgram = filter.try_into().expect("filter compiles");
        let mut bytes = Vec::with_capacity(prog.len() * 8);
        for ins in prog {
            bytes.extend_from_slice(&ins.code.to_ne_bytes());
            bytes.push(ins.jt);
            bytes.push(ins.jf);
            bytes.extend_from_slice(&ins.k.to_ne_bytes());
        }
        bytes
    }
}
