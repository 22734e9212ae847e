//! The seccomp allowlists of a task, one row per system call: who may make it
//! (both profiles, or only the wasm runtime's or a native program's), on which
//! argument values, and why. Everything else kills the process. `build.rs`
//! compiles these rows to BPF (seccompiler, then a search tree in front of its
//! chain); `sys/linux/worker/seccomp.rs` attaches the result.
//!
//! A row's `args` is a list of alternatives, each a list of conditions that
//! must all hold; an empty list allows the call whatever its arguments.

use Profile::{Both, Native, Wasm};

/// Which filter a row belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Both,
    /// The wasm runtime's filter (the worker itself runs the module).
    Wasm,
    /// A native program's filter.
    Native,
}

/// How much of a syscall argument a condition compares.
#[derive(Clone, Copy)]
pub enum Width {
    /// The low 32 bits.
    Dword,
    Qword,
}

/// A comparison of one argument.
#[derive(Clone, Copy)]
pub enum Op {
    Eq,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// One condition on one argument (0-based).
#[derive(Clone, Copy)]
pub struct Cond {
    pub arg: u8,
    pub width: Width,
    pub op: Op,
    pub value: u64,
}

/// One allowed system call.
pub struct Row {
    pub nr: i64,
    pub profile: Profile,
    /// Alternatives, each all of its conditions; empty: any arguments.
    pub args: &'static [&'static [Cond]],
    pub why: &'static str,
}

const fn row(nr: i64, profile: Profile, why: &'static str) -> Row {
    Row {
        nr,
        profile,
        args: &[],
        why,
    }
}

const fn when(
    nr: i64,
    profile: Profile,
    args: &'static [&'static [Cond]],
    why: &'static str,
) -> Row {
    Row {
        nr,
        profile,
        args,
        why,
    }
}

const fn dword(arg: u8, value: u64) -> Cond {
    Cond {
        arg,
        width: Width::Dword,
        op: Op::Eq,
        value,
    }
}

const fn qword(arg: u8, value: u64) -> Cond {
    Cond {
        arg,
        width: Width::Qword,
        op: Op::Eq,
        value,
    }
}

const fn qword_masked(arg: u8, mask: u64, value: u64) -> Cond {
    Cond {
        arg,
        width: Width::Qword,
        op: Op::MaskedEq(mask),
        value,
    }
}

/// Namespace-creating clone flags: never allowed.
const NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

const FILES: &str = "WASI files under the preopens; a native program's files";
const MEMORY: &str = "memory management (wasmtime, the allocator)";
const THREADS: &str = "tokio's and wasmtime's threads";
const TIME: &str = "clocks and sleeps";
const SIGNALS: &str = "signals wasmtime uses for traps";
const PROCESS: &str = "a process's own identity, limits and exit";
const POLL: &str = "tokio's event loop";

/// The rows on every architecture.
pub const RULES: &[Row] = &[
    // Files.
    row(libc::SYS_read, Both, FILES),
    row(libc::SYS_write, Both, FILES),
    row(libc::SYS_readv, Both, FILES),
    row(libc::SYS_writev, Both, FILES),
    row(libc::SYS_pread64, Both, FILES),
    row(libc::SYS_pwrite64, Both, FILES),
    row(libc::SYS_preadv, Both, FILES),
    row(libc::SYS_pwritev, Both, FILES),
    row(libc::SYS_openat, Both, FILES),
    row(libc::SYS_openat2, Both, FILES),
    row(libc::SYS_close, Both, FILES),
    row(libc::SYS_fstat, Both, FILES),
    row(libc::SYS_newfstatat, Both, FILES),
    row(libc::SYS_statx, Both, FILES),
    row(libc::SYS_lseek, Both, FILES),
    row(libc::SYS_getdents64, Both, FILES),
    row(libc::SYS_mkdirat, Both, FILES),
    row(libc::SYS_unlinkat, Both, FILES),
    row(libc::SYS_renameat2, Both, FILES),
    row(libc::SYS_readlinkat, Both, FILES),
    row(libc::SYS_fsync, Both, FILES),
    row(libc::SYS_fdatasync, Both, FILES),
    row(libc::SYS_ftruncate, Both, FILES),
    row(libc::SYS_fcntl, Both, FILES),
    row(libc::SYS_fadvise64, Both, FILES),
    row(libc::SYS_utimensat, Both, FILES),
    row(libc::SYS_faccessat, Both, FILES),
    row(libc::SYS_faccessat2, Both, FILES),
    row(libc::SYS_fstatfs, Both, FILES),
    row(libc::SYS_statfs, Both, FILES),
    row(libc::SYS_dup, Both, FILES),
    row(libc::SYS_dup3, Both, FILES),
    row(libc::SYS_pipe2, Both, FILES),
    when(
        libc::SYS_ioctl,
        Both,
        &[
            &[dword(1, libc::FIONBIO)],
            &[dword(1, libc::FIOCLEX)],
            &[dword(1, libc::TCGETS)],
        ],
        "FIONBIO, FIOCLEX and TCGETS (isatty probes) only",
    ),
    // Memory.
    row(libc::SYS_mmap, Both, MEMORY),
    row(libc::SYS_munmap, Both, MEMORY),
    row(libc::SYS_mprotect, Both, MEMORY),
    row(libc::SYS_mremap, Both, MEMORY),
    row(libc::SYS_madvise, Both, MEMORY),
    row(libc::SYS_brk, Both, MEMORY),
    row(libc::SYS_membarrier, Both, MEMORY),
    row(
        libc::SYS_memfd_create,
        Both,
        "wasmtime's copy-on-write memory images",
    ),
    // Threads and processes.
    row(libc::SYS_futex, Both, THREADS),
    row(libc::SYS_sched_yield, Both, THREADS),
    row(libc::SYS_sched_getaffinity, Both, THREADS),
    row(libc::SYS_set_robust_list, Both, THREADS),
    row(libc::SYS_rseq, Both, THREADS),
    row(libc::SYS_set_tid_address, Both, THREADS),
    when(
        libc::SYS_prctl,
        Both,
        &[
            &[qword(0, libc::PR_SET_NAME as u64)],
            &[qword(0, libc::PR_GET_NAME as u64)],
        ],
        "thread names only",
    ),
    when(
        libc::SYS_clone,
        Wasm,
        &[&[qword_masked(
            0,
            NS_FLAGS | libc::CLONE_THREAD as u64,
            libc::CLONE_THREAD as u64,
        )]],
        "threads only (CLONE_THREAD set), never namespaces",
    ),
    when(
        libc::SYS_clone,
        Native,
        &[&[qword_masked(0, NS_FLAGS, 0)]],
        "native programs may fork (the pids limit bounds them), never create namespaces",
    ),
    row(libc::SYS_execve, Native, "a native program runs others"),
    row(
        libc::SYS_wait4,
        Native,
        "a native program reaps its children",
    ),
    row(libc::SYS_getppid, Native, PROCESS),
    row(libc::SYS_getpgid, Native, PROCESS),
    row(
        libc::SYS_getcwd,
        Native,
        "a native program's working directory",
    ),
    row(
        libc::SYS_chdir,
        Native,
        "a native program's working directory",
    ),
    row(libc::SYS_exit, Both, PROCESS),
    row(libc::SYS_exit_group, Both, PROCESS),
    row(libc::SYS_getpid, Both, PROCESS),
    row(libc::SYS_gettid, Both, PROCESS),
    row(libc::SYS_getuid, Both, PROCESS),
    row(libc::SYS_geteuid, Both, PROCESS),
    row(libc::SYS_getgid, Both, PROCESS),
    row(libc::SYS_getegid, Both, PROCESS),
    row(libc::SYS_uname, Both, PROCESS),
    row(libc::SYS_prlimit64, Both, PROCESS),
    row(libc::SYS_getrusage, Both, PROCESS),
    row(
        libc::SYS_getrandom,
        Both,
        "WASI's random source and hash seeds",
    ),
    // Lowering itself to where it already is: the task's process installs
    // this filter at the caller's priority (attaching one JIT-compiles it)
    // and only then drops to `SCHED_IDLE` and the idle I/O class, before its
    // exec. Nothing else is allowed, so a task cannot raise itself.
    when(
        libc::SYS_sched_setscheduler,
        Native,
        &[&[dword(0, 0), dword(1, libc::SCHED_IDLE as u64)]],
        "SCHED_IDLE on itself only",
    ),
    when(
        libc::SYS_ioprio_set,
        Native,
        // ioprio_set(IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << 13)
        &[&[dword(0, 1), dword(1, 0), dword(2, 3 << 13)]],
        "the idle I/O class on itself only",
    ),
    // Time.
    row(libc::SYS_nanosleep, Both, TIME),
    row(libc::SYS_clock_nanosleep, Both, TIME),
    row(libc::SYS_clock_gettime, Both, TIME),
    row(libc::SYS_clock_getres, Both, TIME),
    row(libc::SYS_gettimeofday, Both, TIME),
    // Signals.
    row(libc::SYS_rt_sigaction, Both, SIGNALS),
    row(libc::SYS_rt_sigprocmask, Both, SIGNALS),
    row(libc::SYS_rt_sigreturn, Both, SIGNALS),
    row(libc::SYS_sigaltstack, Both, SIGNALS),
    row(libc::SYS_tgkill, Both, SIGNALS),
    // Event loop.
    row(libc::SYS_epoll_create1, Both, POLL),
    row(libc::SYS_epoll_ctl, Both, POLL),
    row(libc::SYS_epoll_pwait, Both, POLL),
    row(libc::SYS_eventfd2, Both, POLL),
    row(libc::SYS_ppoll, Both, POLL),
    // tokio's signal driver (compiled in when any crate of a workspace build
    // enables tokio's `signal` feature) makes a local pair for its wake-ups; a
    // local pair reaches nothing.
    when(
        libc::SYS_socketpair,
        Both,
        &[&[qword(0, libc::AF_UNIX as u64)]],
        "AF_UNIX only: tokio's signal driver's wake-ups",
    ),
];

/// The older calls x86_64 still has beside their `*at` and `p*` successors.
#[cfg(target_arch = "x86_64")]
pub const X86_64_RULES: &[Row] = &[
    row(libc::SYS_epoll_wait, Both, POLL),
    row(libc::SYS_pause, Both, SIGNALS),
    row(libc::SYS_poll, Both, POLL),
    row(libc::SYS_arch_prctl, Both, "thread-local storage"),
    row(libc::SYS_access, Both, FILES),
    row(libc::SYS_readlink, Both, FILES),
    row(libc::SYS_stat, Both, FILES),
    row(libc::SYS_lstat, Both, FILES),
    row(libc::SYS_open, Both, FILES),
    row(libc::SYS_mkdir, Both, FILES),
    row(libc::SYS_unlink, Both, FILES),
    row(libc::SYS_rename, Both, FILES),
    row(libc::SYS_fork, Native, "native programs may fork"),
    row(libc::SYS_vfork, Native, "native programs may fork"),
];

/// No x86_64-only calls elsewhere.
#[cfg(not(target_arch = "x86_64"))]
pub const X86_64_RULES: &[Row] = &[];

/// Calls answered with ENOSYS rather than allowed or fatal: `clone3`'s flags
/// sit in a struct the filter cannot read, so libc falls back to `clone`,
/// whose flags are checked.
pub const ENOSYS: &[i64] = &[libc::SYS_clone3];
