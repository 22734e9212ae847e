//! The parent↔worker contract: the environment variables and inherited fd
//! numbers a worker is started with, the request's framing (one byte carrying
//! descriptors with `SCM_RIGHTS`, then the JSON to the end of the stream) and
//! the report lines the worker writes on [`REPORT_FD`]
//! ([`crate::proto::parse_reports`] reads them). Both sides use this file.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::proto::{Passed, WorkerReport};

/// The worker's fd for its reports, one JSON line each ([`report`]).
pub(super) const REPORT_FD: RawFd = 3;

/// Set for a spare: the join files of the cgroup to join as it starts, one per
/// line (a path with a newline would fail to join early and be joined at the
/// request, which names the files again).
pub(super) const CGROUP_JOIN_ENV: &str = "ASKEE_WORKER_CGROUP_JOIN";

/// Set when the worker's fd [`IDLE_FD`] is its task cgroup's `cpu.idle`,
/// opened by the sandbox: the sandbox's init makes the cgroup idle as its task
/// starts and lifts that as the task ends ([`TaskCgroup::set_idle`]), so the
/// set-up and tear-down around it run at the caller's priority.
pub(super) const IDLE_FD_ENV: &str = "ASKEE_WORKER_IDLE_FD";

/// The worker's fd for its cgroup's `cpu.idle` (after the report pipe, fd 3).
pub(super) const IDLE_FD: RawFd = 4;

/// Set for a spare whose fd [`NETNS_FD`] is a network namespace to enter
/// instead of making one: an earlier task's, which nothing in it could change
/// ([`NetnsFromTask`]). Making a network namespace is half a millisecond in
/// the kernel, and its tear-down a kernel worker's run after every task, both
/// beside the start of the next task when tasks come back to back.
pub(super) const NETNS_FD_ENV: &str = "ASKEE_WORKER_NETNS_FD";

/// The worker's fd for the network namespace to enter ([`NETNS_FD_ENV`]).
pub(super) const NETNS_FD: RawFd = 5;

/// Set for a spare whose parent can pass it mounts (see [`mount_api`]): its
/// inner worker prepares its root before the request ([`prepare_root`]), so a
/// start unmounts nothing. An unmount waits out an RCU grace period, which on a
/// kernel without preemption waits for every other CPU to leave the kernel;
/// with tasks back to back the other CPU is making the next spare, and the
/// unmount after `pivot_root` took about 1 ms instead of 0.08 in one start in
/// ten.
pub(super) const PREPARE_ROOT_ENV: &str = "ASKEE_WORKER_PREPARE_ROOT";

/// Set for a spare: make the network, UTS and IPC namespaces before the request
/// arrives (or enter an ended task's network namespace, [`NETNS_FD_ENV`]). None
/// of them depends on the request; the network namespace alone takes about
/// 0.4 ms to make. Its value says whether the task gets a user
/// namespace ([`SPARE_WITH_USER_NAMESPACE`]), so that a spare that has joined its
/// cgroup can make the remaining namespaces and its inner worker early as well.
pub(super) const EARLY_NAMESPACES_ENV: &str = "ASKEE_WORKER_EARLY_NAMESPACES";

/// [`EARLY_NAMESPACES_ENV`]'s value for a task with a user namespace.
pub(super) const SPARE_WITH_USER_NAMESPACE: &str = "user";

pub(super) fn join_env(files: &[PathBuf]) -> OsString {
    let mut v = OsString::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            v.push("\n");
        }
        v.push(f);
    }
    v
}

pub(super) fn report(fd: &mut File, r: &WorkerReport) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        let _ = fd.write_all(&line);
    }
}

/// The most descriptors a request passes (one of each [`Passed`]).
pub(super) const MAX_PASSED: usize = 3;

/// Send a request: one byte carrying `fds`, then `json` (the worker reads it
/// to the end of the stream).
pub(super) fn send_request(
    sock: &mut UnixStream,
    fds: &[OwnedFd],
    json: &[u8],
) -> std::io::Result<()> {
    send_fds(sock.as_raw_fd(), fds)?;
    sock.write_all(json)
}

/// Send one byte carrying `fds` on the socket `sock`.
pub(super) fn send_fds(sock: RawFd, fds: &[OwnedFd]) -> std::io::Result<()> {
    let byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // u64 words: the control buffer must be aligned for `cmsghdr`.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all zero is an empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if fds.len() > MAX_PASSED {
        return Err(std::io::Error::other(format!(
            "{} descriptors to pass, at most {MAX_PASSED}",
            fds.len()
        )));
    }
    if !fds.is_empty() {
        let bytes = (fds.len() * std::mem::size_of::<RawFd>()) as libc::c_uint;
        // SAFETY: CMSG_SPACE is arithmetic.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        debug_assert!(space <= std::mem::size_of_val(&control));
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds one header with room for
        // MAX_PASSED descriptors; CMSG_FIRSTHDR and CMSG_DATA point into it.
        unsafe {
            let h = libc::CMSG_FIRSTHDR(&msg);
            (*h).cmsg_level = libc::SOL_SOCKET;
            (*h).cmsg_type = libc::SCM_RIGHTS;
            (*h).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let data = libc::CMSG_DATA(h).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: sendmsg on our socket with the message built above.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r == 1 {
            return Ok(());
        }
        if r >= 0 {
            return Err(std::io::Error::other(
                "the request's first byte was not sent",
            ));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The descriptors a request passed, by kind.
#[derive(Default)]
pub(super) struct PassedFds {
    pub(super) input: Option<OwnedFd>,
    pub(super) program: Option<OwnedFd>,
    pub(super) artifact: Option<OwnedFd>,
}

impl PassedFds {
    /// Pair `fds` with the request's `kinds`: as many of each, and each kind once.
    pub(super) fn pair(kinds: &[Passed], fds: Vec<OwnedFd>) -> Result<PassedFds, String> {
        if kinds.len() != fds.len() {
            return Err(format!(
                "the request names {} passed descriptors, {} arrived",
                kinds.len(),
                fds.len()
            ));
        }
        let mut out = PassedFds::default();
        for (kind, fd) in kinds.iter().zip(fds) {
            let slot = match kind {
                Passed::InputTree => &mut out.input,
                Passed::ProgramTree => &mut out.program,
                Passed::Artifact => &mut out.artifact,
            };
            if slot.replace(fd).is_some() {
                return Err(format!("the request passes {kind:?} twice"));
            }
        }
        Ok(out)
    }
}

/// The descriptors passed with the byte before the request on fd 0
/// ([`send_request`]), close-on-exec; none when fd 0 is not a socket.
pub(super) fn receive_fds() -> std::io::Result<Vec<OwnedFd>> {
    receive_fds_on(0, 0)
}

/// The descriptors passed with one byte on `sock` ([`send_fds`]),
/// close-on-exec; `flags` for `recvmsg` (`MSG_DONTWAIT`).
pub(super) fn receive_fds_on(sock: RawFd, flags: libc::c_int) -> std::io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all zero is an empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let r = loop {
        // SAFETY: recvmsg on `sock` into the buffers above, which outlive the call.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        let e = std::io::Error::last_os_error();
        if r < 0 && e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if r < 0 && e.raw_os_error() == Some(libc::ENOTSOCK) {
            return Ok(Vec::new());
        }
        if r < 0 {
            return Err(e);
        }
        break r;
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` up to msg_controllen; CMSG_FIRSTHDR
    // and CMSG_NXTHDR stay within it, and each SCM_RIGHTS payload holds
    // descriptors now ours.
    unsafe {
        let mut h = libc::CMSG_FIRSTHDR(&msg);
        while !h.is_null() {
            if (*h).cmsg_level == libc::SOL_SOCKET && (*h).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*h).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(h).cast::<RawFd>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            h = libc::CMSG_NXTHDR(&msg, h);
        }
    }
    if r != 1 {
        return Err(std::io::Error::other(
            "the stream ended before the byte carrying descriptors",
        ));
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other(
            "more descriptors were passed than fit a request's",
        ));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::sys::linux::pipe;

    /// A request's descriptors pair with the kinds it names: as many, and
    /// each kind once.
    #[test]
    fn passed_descriptors_pair_with_their_kinds_once_each() {
        let fd = || OwnedFd::from(File::open("/dev/null").unwrap());
        let e = PassedFds::pair(&[Passed::InputTree], Vec::new())
            .err()
            .unwrap();
        assert_eq!(e, "the request names 1 passed descriptors, 0 arrived");
        let e = PassedFds::pair(&[Passed::Artifact, Passed::Artifact], vec![fd(), fd()])
            .err()
            .unwrap();
        assert_eq!(e, "the request passes Artifact twice");
        let p =
            PassedFds::pair(&[Passed::ProgramTree, Passed::InputTree], vec![fd(), fd()]).unwrap();
        assert!(p.input.is_some() && p.program.is_some() && p.artifact.is_none());
    }

    /// and the request is the rest of the stream.
    #[test]
    fn descriptors_travel_with_the_first_byte_of_a_request() {
        let (mut parent, worker) = UnixStream::pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_request(&mut parent, &[r], b"{\"request\":1}").unwrap();
        drop(parent);
        File::from(w).write_all(b"through the pipe").unwrap();
        let fds = receive_fds_on(worker.as_raw_fd(), 0).unwrap();
        assert_eq!(fds.len(), 1);
        // SAFETY: F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let mut rest = String::new();
        (&worker).read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "{\"request\":1}");
        let mut piped = String::new();
        File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut piped)
            .unwrap();
        assert_eq!(piped, "through the pipe");
        // Nothing waiting: a would-block error, not a hang.
        let (_a, b) = UnixStream::pair().unwrap();
        let e = receive_fds_on(b.as_raw_fd(), libc::MSG_DONTWAIT).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        // A request on a pipe passes no descriptors.
        let (r, _w) = pipe().unwrap();
        assert!(
            receive_fds_on(r.as_raw_fd(), libc::MSG_DONTWAIT)
                .unwrap()
                .is_empty()
        );
    }
}
