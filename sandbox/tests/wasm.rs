//! WebAssembly tasks through the full sandbox, and the runtime's determinism.

mod common;

use askee_sandbox::{TaskOutcome, TaskSpec};
use common::{limits, sandbox, wat};

fn hello() -> Vec<u8> {
    // iovec at 0: ptr 16, len 6; "hello\n" at 16.
    wat(
        r#"(drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"#,
        r#"(data (i32.const 0) "\10\00\00\00\06\00\00\00") (data (i32.const 16) "hello\n")"#,
    )
}

#[test]
fn hello_completes_confined_with_stable_digest() {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path());
    let mut spec = TaskSpec::wasm(hello());
    spec.limits = limits();
    let (out, conf) = sb.spawn(&spec).unwrap().wait().unwrap();
    let TaskOutcome::Completed {
        exit_code,
        stdout,
        digest,
        usage,
        ..
    } = out
    else {
        panic!("unexpected outcome {out:?}");
    };
    assert_eq!(exit_code, 0);
    assert_eq!(stdout, b"hello\n");
    assert_eq!(
        digest,
        askee_sandbox::digest::result_digest(0, b"hello\n", &[])
    );
    assert!(usage.fuel_consumed.unwrap() > 0);
    let caps = askee_sandbox::probe();
    assert_eq!(conf.seccomp, caps.seccomp && caps.seccomp_filters_built);
    assert_eq!(conf.landlock_abi.is_some(), caps.landlock_abi.is_some());
    assert!(conf.no_new_privs);
    for ns in ["pid", "net", "mnt", "uts", "ipc"] {
        assert!(conf.namespaces.iter().any(|n| n == ns), "{ns} missing");
    }
    // A second run of the same module gives the same digest.
    let again = sb.run(&spec).unwrap();
    assert!(matches!(again, TaskOutcome::Completed { digest: d, .. } if d == digest));
}
