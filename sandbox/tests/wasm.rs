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

#[test]
fn clocks_and_randomness_are_deterministic_in_and_out_of_the_sandbox() {
    // Write 16 random bytes and the realtime clock (8 bytes) to stdout and to
    // /output/r, twice; all digests must agree and match an in-process run.
    let m = wat(
        r#"(drop (call $random_get (i32.const 96) (i32.const 16)))
           (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 112)))
           (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
           (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 40) (i32.const 1)
              (i32.const 1) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 48)))
           (drop (call $fd_write (i32.load (i32.const 48)) (i32.const 0) (i32.const 1) (i32.const 8)))"#,
        r#"(data (i32.const 0) "\60\00\00\00\18\00\00\00") (data (i32.const 40) "r")"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path());
    let mut spec = TaskSpec::wasm(m.clone());
    spec.limits = limits();
    spec.random_seed = [7; 32];
    let a = sb.run(&spec).unwrap();
    let b = sb.run(&spec).unwrap();
    let (
        TaskOutcome::Completed {
            digest: da,
            stdout,
            outputs,
            ..
        },
        TaskOutcome::Completed { digest: db, .. },
    ) = (&a, &b)
    else {
        panic!("{a:?} {b:?}");
    };
    assert_eq!(da, db);
    assert_eq!(stdout.len(), 24);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].path, "r");
    assert_eq!(&outputs[0].contents, stdout);
    // 2000-01-01T00:00:00Z in nanoseconds, little endian.
    assert_eq!(&stdout[16..], &946_684_800_000_000_000u64.to_le_bytes());
    // A different seed changes the random bytes.
    spec.random_seed = [8; 32];
    let c = sb.run(&spec).unwrap();
    assert!(matches!(c, TaskOutcome::Completed { digest, .. } if digest != *da));

    let out_dir = tempfile::tempdir().unwrap();
    let engine = sb.engine();
    let module = engine.compile(&m).unwrap();
    let inv = askee_sandbox::runtime::Invocation {
        output_dir: Some(out_dir.path().to_path_buf()),
        random_seed: [7; 32],
        limits: limits(),
        ..Default::default()
    };
    let run = engine.run(&module, &inv).unwrap();
    assert_eq!(
        askee_sandbox::digest::result_digest(0, &run.stdout, &run.outputs),
        *da
    );
}

/// Found by the demo (issue 8): two jobs compiling the same new module at
/// once shared one temporary cache file, and one of them failed with "module
/// cache file ...: No such file or directory" when the other renamed it away.
#[test]
fn jobs_compiling_one_module_at_once_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let engine = askee_sandbox::runtime::WasmEngine::new(
        Some(dir.path().join("cache")),
        askee_sandbox::runtime::Watchdog::Epoch,
    )
    .unwrap();
    // Many functions: compiling takes long enough for the writers to meet.
    let funcs: String = (0..400)
        .map(|i| {
            format!("(func $f{i} (param i32) (result i32) (i32.mul (local.get 0) (i32.const {i})))")
        })
        .collect();
    let module = format!("(module {funcs} (func (export \"_start\")))");
    let start = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        let jobs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    engine.compile(module.as_bytes()).map(|_| ())
                })
            })
            .collect();
        for j in jobs {
            j.join()
                .unwrap()
                .expect("every concurrent compile succeeds");
        }
    });
    let sb = sandbox(dir.path());
    let mut spec = TaskSpec::wasm(hello());
    spec.limits = limits();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let jobs: Vec<_> = (0..4).map(|_| s.spawn(|| sb.run(&spec))).collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for out in outcomes {
        let out = out.unwrap();
        assert!(
            matches!(out, TaskOutcome::Completed { ref stdout, .. } if stdout == b"hello\n"),
            "{out:?}"
        );
    }
}

/// The two watchdogs, in-process: the epoch engine stops a spinning guest at
/// its wall-clock limit by itself, and both stop a guest that ignores write
/// errors on a full stdout (the cap traps; no watchdog is needed), with the
/// same output and the same fuel.
#[test]
fn in_process_limits_hold_under_both_watchdogs() {
    use askee_sandbox::KillReason;
    use askee_sandbox::runtime::{Invocation, WasmEngine, Watchdog};
    use askee_sandbox::types::WasmEnd;
    use std::time::Duration;

    let spin = wat("(loop $l (br $l))", "");
    let epoch = WasmEngine::new(None, Watchdog::Epoch).unwrap();
    let inv = Invocation {
        limits: askee_sandbox::Limits {
            fuel: u64::MAX,
            wall_time: Duration::from_millis(300),
            ..limits()
        },
        ..Default::default()
    };
    let run = epoch.run(&epoch.compile(&spin).unwrap(), &inv).unwrap();
    assert_eq!(run.end, WasmEnd::Killed(KillReason::WallTime));

    // 4096 bytes per write, errors ignored, forever.
    let flood = wat(
        "(loop $l (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $l))",
        r#"(data (i32.const 0) "\10\00\00\00\00\10\00\00")"#,
    );
    let inv = Invocation {
        limits: askee_sandbox::Limits {
            fuel: 10_000_000_000,
            stdout_bytes: 10_000,
            ..limits()
        },
        ..Default::default()
    };
    let mut runs = Vec::new();
    for watchdog in [Watchdog::Epoch, Watchdog::External] {
        let engine = WasmEngine::new(None, watchdog).unwrap();
        let run = engine.run(&engine.compile(&flood).unwrap(), &inv).unwrap();
        assert_eq!(run.end, WasmEnd::OutputTruncated, "{watchdog:?}");
        assert_eq!(run.stdout.len(), 10_000, "{watchdog:?}: filled to the cap");
        runs.push(run);
    }
    assert_eq!(runs[0].stdout, runs[1].stdout);
    assert_eq!(runs[0].fuel_consumed, runs[1].fuel_consumed);
}

/// Regression test for the vendored fuel check (issue 3, vendor/README.md): a
/// guest out of fuel is stopped by a trap in its own code, in a loop or at a
/// function's entry, reported as a fuel kill that consumed exactly its limit
/// (the fuel is saved before the trap); limits above `MAX_FUEL` are capped,
/// and a completed run's fuel does not depend on the limit or the watchdog.
#[test]
fn issue_3_a_guest_out_of_fuel_traps_with_its_fuel_saved() {
    use askee_sandbox::KillReason;
    use askee_sandbox::runtime::{Invocation, MAX_FUEL, WasmEngine, Watchdog};
    use askee_sandbox::types::WasmEnd;

    // 100 000 calls from a loop, then "ok\n".
    let m = wat(
        r#"(local $i i32)
           (loop $l
             (local.set $i (call $step (local.get $i)))
             (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
           (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"#,
        r#"(func $step (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
           (data (i32.const 0) "\10\00\00\00\03\00\00\00") (data (i32.const 16) "ok\n")"#,
    );
    let inv = |fuel| Invocation {
        limits: askee_sandbox::Limits { fuel, ..limits() },
        ..Default::default()
    };
    let mut used = Vec::new();
    for watchdog in [Watchdog::Epoch, Watchdog::External] {
        let engine = WasmEngine::new(None, watchdog).unwrap();
        let module = engine.compile(&m).unwrap();
        let full = engine.run(&module, &inv(u64::MAX)).unwrap();
        assert_eq!(full.end, WasmEnd::Exited(0), "{watchdog:?}");
        assert_eq!(full.stdout, b"ok\n");
        let u = full.fuel_consumed;
        assert!(u > 500_000 && u < MAX_FUEL, "{watchdog:?}: {u}");
        let capped = engine.run(&module, &inv(MAX_FUEL)).unwrap();
        assert_eq!(capped.fuel_consumed, u, "{watchdog:?}");
        let roomy = engine.run(&module, &inv(u + 1000)).unwrap();
        assert_eq!((roomy.end, roomy.fuel_consumed), (WasmEnd::Exited(0), u));
        // Out of fuel in the loop, at `$step`'s entry, or at `_start`'s entry.
        for fuel in [u / 2, u / 3 + 7, 1] {
            let short = engine.run(&module, &inv(fuel)).unwrap();
            assert_eq!(
                short.end,
                WasmEnd::Killed(KillReason::Fuel),
                "{watchdog:?}, fuel {fuel}"
            );
            assert!(short.stdout.is_empty());
            assert_eq!(short.fuel_consumed, fuel, "{watchdog:?}: all of it");
        }
        used.push(u);
    }
    assert_eq!(used[0], used[1]);
}
