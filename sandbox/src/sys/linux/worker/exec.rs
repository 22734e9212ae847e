//! Starting a native task's process from the inner worker: `clone` with
//! `CLONE_VM | CLONE_VFORK`, the seccomp filter attached, `execve`.

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};

use super::super::{SECCOMP_NATIVE, errno};
use super::Stage;
use super::confine::lower_priority;
use super::seccomp::{bpf, fprog, install_filter};

/// What the task's process needs between `clone` and `execve`, made ready
/// before: it shares this process's memory, so it must not allocate.
pub(super) struct TaskExec {
    /// The native filter, when one was built for this target.
    pub(super) filter: Option<libc::sock_fprog>,
    pub(super) prog: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    /// The step that failed (1 seccomp, 2 execve) and its errno, from the child.
    pub(super) failed: AtomicU64,
    /// The CPUs the task may run on, when this process pinned itself (and so
    /// the child) to its CPU ([`pin_to_this_cpu`]); the child restores them.
    pub(super) affinity: Option<libc::cpu_set_t>,
}

extern "C" fn task_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `TaskExec` that `exec_task` keeps alive until this
    // child has exec'd or exited (CLONE_VFORK suspends it until then).
    let t = unsafe { &*(arg as *const TaskExec) };
    if let Some(set) = &t.affinity {
        set_affinity(set);
    }
    let fail = |step: u64| {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as u64;
        t.failed.store(step << 32 | e, Ordering::SeqCst);
        // SAFETY: _exit ends this child without running the parent's destructors.
        unsafe { libc::_exit(127) }
    };
    // The filter first, at the caller's priority (attaching it JIT-compiles
    // it: the sandbox's work, not the task's), then `SCHED_IDLE`, which the
    // native filter allows a process to set on itself and nothing more.
    if let Some(f) = &t.filter
        && install_filter(f).is_err()
    {
        fail(1);
    }
    lower_priority();
    // SAFETY: prog, argv and envp are valid NULL-terminated C data owned by the
    // suspended parent.
    unsafe { libc::execve(t.prog, t.argv, t.envp) };
    fail(2)
}

/// Pin this process to the CPU it runs on, so that a child it starts now runs
/// there as soon as this process waits for it (`CLONE_VFORK`); returns the CPUs
/// allowed before. A new process otherwise goes to the least busy CPU, and one
/// running only `SCHED_IDLE` work counts as idle: a spare being made there, in
/// a system call a kernel without preemption does not interrupt, held the
/// task's start back by up to a millisecond while this CPU sat idle.
pub(super) fn pin_to_this_cpu() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity and sched_getcpu on
    // this process with a valid set.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut before) != 0 {
            return None;
        }
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return None;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut one);
        set_affinity(&one).then_some(before)
    }
}

/// `sched_setaffinity` on this process; whether it took.
pub(super) fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: sched_setaffinity on this process with a valid set and its size.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// Start the native task: at `SCHED_IDLE`, under the seccomp filters, exec'd
/// from `prog` with `argv` and an empty environment. Started with `CLONE_VM |
/// CLONE_VFORK` rather than `fork`: copying this worker's page tables took
/// 0.25 ms at the median and up to 2 ms on the task's start path.
pub(super) fn exec_task(prog: &std::ffi::CStr, argv: &[CString]) -> Result<i32, Stage> {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let filter = bpf(SECCOMP_NATIVE);
    let t = TaskExec {
        // The init stays on its CPU afterwards: it only reaps and reports, and
        // the task's exit then wakes it there rather than on a CPU counted
        // idle because a spare is being made on it.
        affinity: pin_to_this_cpu(),
        filter: (!filter.is_empty()).then(|| fprog(&filter)),
        prog: prog.as_ptr(),
        argv: ptrs.as_ptr(),
        envp: envp.as_ptr(),
        failed: AtomicU64::new(0),
    };
    let mut stack = vec![0u8; 256 << 10];
    // The stack grows down from its 16-byte-aligned top.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs `task_child` on its own stack with `t`, both alive
    // until clone returns (CLONE_VFORK: after the child's execve or exit).
    let child = unsafe {
        libc::clone(
            task_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &t as *const TaskExec as *mut libc::c_void,
        )
    };
    if child < 0 {
        return Err(Stage::new("fork task", errno()));
    }
    match t.failed.load(Ordering::SeqCst) {
        0 => Ok(child),
        f => {
            // Reap it here: it never became the task.
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            unsafe { libc::waitpid(child, &mut status, 0) };
            let step = if f >> 32 == 1 { "seccomp" } else { "execve" };
            let e = std::io::Error::from_raw_os_error((f & 0xffff_ffff) as i32);
            Err(Stage::new(step, e))
        }
    }
}
