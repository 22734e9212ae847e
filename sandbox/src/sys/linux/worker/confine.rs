//! Confinement the inner worker applies to itself before the task: rlimits,
//! Landlock, capabilities, scheduling.

use super::check;

/// Run the task's processes (and none of the sandbox's own set-up) at
/// `SCHED_IDLE` and the idle I/O class.
pub(super) fn lower_priority() {
    // SAFETY: plain syscalls on this process with valid arguments.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        // IOPRIO_WHO_PROCESS = 1, IOPRIO_CLASS_IDLE = 3 << 13.
        libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13);
    }
}

pub(super) fn set_rlimits(l: &crate::types::Limits) -> Result<(), String> {
    let cpu = l.cpu_time.as_secs().max(1) + u64::from(l.cpu_time.subsec_nanos() > 0);
    let set = |res: libc::__rlimit_resource_t, soft: u64, hard: u64, name: &str| {
        let r = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit with a valid rlimit struct.
        check(unsafe { libc::setrlimit(res, &r) }, name)
    };
    // SIGXCPU at the limit, SIGKILL one second later.
    set(libc::RLIMIT_CPU, cpu, cpu + 1, "RLIMIT_CPU")?;
    set(
        libc::RLIMIT_FSIZE,
        l.storage_bytes,
        l.storage_bytes,
        "RLIMIT_FSIZE",
    )?;
    set(libc::RLIMIT_CORE, 0, 0, "RLIMIT_CORE")?;
    set(libc::RLIMIT_NOFILE, 256, 256, "RLIMIT_NOFILE")?;
    set(libc::RLIMIT_MEMLOCK, 0, 0, "RLIMIT_MEMLOCK")?;
    set(libc::RLIMIT_MSGQUEUE, 0, 0, "RLIMIT_MSGQUEUE")?;
    Ok(())
}

pub(super) fn apply_landlock(native: bool) -> Result<String, String> {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
        Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let e = |e: landlock::RulesetError| e.to_string();
    let mut created = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(e)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(e)?
        .scope(Scope::from_all(abi))
        .map_err(e)?
        .create()
        .map_err(e)?
        .add_rules(path_beneath_rules(["/input"], AccessFs::from_read(abi)))
        .map_err(e)?
        .add_rules(path_beneath_rules(["/scratch"], AccessFs::from_all(abi)))
        .map_err(e)?;
    if native {
        created = created
            .add_rules(path_beneath_rules(
                ["/prog"],
                AccessFs::from_file(abi) & AccessFs::from_read(abi),
            ))
            .map_err(e)?;
    }
    let status = created.restrict_self().map_err(e)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "fully enforced".into(),
        RulesetStatus::PartiallyEnforced => "partially enforced".into(),
        RulesetStatus::NotEnforced => "not enforced".into(),
    })
}

#[repr(C)]
pub(super) struct CapHeader {
    pub(super) version: u32,
    pub(super) pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct CapData {
    pub(super) effective: u32,
    pub(super) permitted: u32,
    pub(super) inheritable: u32,
}

pub(super) fn drop_capabilities() -> Result<(), String> {
    for cap in 0..64 {
        // SAFETY: prctl(PR_CAPBSET_DROP, cap); EINVAL past the last capability is fine.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: prctl on this process.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a valid v3 header and two data structs, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
    check(r as libc::c_int, "capset")
}
