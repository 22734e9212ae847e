//! Sandbox benchmarks (a bench binary printing p50/p99; results in BENCHMARKS.md).
//! Run: `cargo bench -p askee-sandbox`. `ASKEE_BENCH_ONLY=startup` runs only the
//! native start-up and its bubblewrap reference, `ASKEE_BENCH_ONLY=compute` only
//! the compute kernels. Needs gcc (static glibc), bubblewrap and the wasm32-wasip1 rustup target
//! (tests/setup.d/sandbox.sh installs them); a missing reference is reported, not faked.

#[path = "kernels/matmul.rs"]
mod matmul;
#[path = "kernels/sieve.rs"]
mod sieve;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use askee_sandbox::runtime::{Invocation, WasmEngine};
use askee_sandbox::{Limits, Sandbox, SandboxConfig, TaskOutcome, TaskSpec};

fn pct(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.99))
}

fn show(name: &str, v: Vec<Duration>) {
    let n = v.len();
    let (p50, p99) = pct(v);
    println!("{name:<48} n={n:<4} p50={p50:>10.3?} p99={p99:>10.3?}");
}

fn worker() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_askee-worker"))
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sb = Sandbox::new(SandboxConfig {
        worker: worker(),
        work_dir: tmp.path().join("work"),
        spare_worker: true,
    })
    .expect("sandbox");
    let only = std::env::var("ASKEE_BENCH_ONLY").ok();
    if only.as_deref() == Some("compute") {
        compute(tmp.path(), sb.engine());
        return;
    }
    let limits = Limits {
        memory_bytes: 64 << 20,
        storage_bytes: 4 << 20,
        wall_time: Duration::from_secs(30),
        ..Limits::default()
    };
    // Starts per row (`ASKEE_BENCH_STARTS`): a p99 is the third-worst of 200 and
    // moves by milliseconds between runs on this VM; 1000 steadies it.
    let n: usize = std::env::var("ASKEE_BENCH_STARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);

    native_startup(tmp.path(), &sb, &limits, n);

    cgroup_join();

    // `ASKEE_BENCH_ONLY=startup` stops here (the native start-up and its reference).
    if only.as_deref() == Some("startup") {
        return;
    }

    wasm_trivial(&sb, &limits, n);
    let engine = sb.engine();
    instantiate(engine, &limits);

    // 4. Compute kernels: wasm vs the same Rust code native.
    compute(tmp.path(), engine);
}

/// Row 1: a trivial native task, sandbox start to exit (with and without a
/// spare worker), beside bubblewrap.
fn native_startup(tmp: &Path, sb: &Sandbox, limits: &Limits, n: usize) {
    // 1. Trivial native task, sandbox start to exit, beside bubblewrap.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/native/hostile.c");
    let prog = tmp.join("hostile");
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&prog)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let mut spec = TaskSpec::native(&prog);
    spec.args = vec!["true".into()];
    spec.limits = limits.clone();
    // Spares are kept per worker binary: a copy of the binary keeps this
    // sandbox's tasks off the other sandbox's spares.
    let cold_worker = tmp.join("askee-worker-cold");
    std::fs::copy(worker(), &cold_worker).expect("copy worker");
    let cold = Sandbox::new(SandboxConfig {
        worker: cold_worker,
        work_dir: tmp.join("work-cold"),
        spare_worker: false,
    })
    .expect("sandbox");
    let sandboxed = |sandbox: &Sandbox| {
        let t = Instant::now();
        let out = sandbox.run(&spec).expect("run");
        assert!(matches!(out, TaskOutcome::Completed { exit_code: 0, .. }));
        Some(t.elapsed())
    };
    let bwrap = || {
        let t = Instant::now();
        match Command::new("bwrap")
            .args(["--unshare-all", "--ro-bind", "/", "/", "/bin/true"])
            .status()
        {
            Ok(s) if s.success() => Some(t.elapsed()),
            _ => None,
        }
    };
    let mut kinds: Vec<(&str, Run)> = Vec::new();
    if built {
        kinds.push((
            "sandbox native trivial (spare worker)",
            Box::new(|| sandboxed(sb)),
        ));
        kinds.push((
            "sandbox native trivial, no spare worker",
            Box::new(|| sandboxed(&cold)),
        ));
    } else {
        println!("sandbox native trivial: gcc with static glibc missing, skipped");
    }
    if bwrap().is_some() {
        kinds.push(("bwrap --unshare-all /bin/true (reference)", Box::new(bwrap)));
    } else {
        println!("bwrap reference: bubblewrap missing or failing, skipped");
    }
    take_turns(&kinds, n);
}

/// Run `kinds` `n` times each, back to back and then `pause` apart, and show
/// each kind's times.
fn take_turns(kinds: &[(&str, Run)], n: usize) {
    // Back to back, and with a pause before each start (tasks arriving now and
    // then, as on a volunteer's machine: caches and the kernel's cgroup
    // migration fast path have gone cold by then).
    let pause = Duration::from_millis(20);
    // The kinds take turns in blocks of `block` starts, so a machine that slows
    // down or speeds up during the run (this VM does, by tens of percent over
    // minutes) weighs on all of them alike; within a block starts are back to
    // back (or `pause` apart).
    let block = 10;
    for gap in [None, Some(pause)] {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
        for _ in 0..n / block {
            for (k, (_, run)) in kinds.iter().enumerate() {
                for _ in 0..block {
                    if let Some(g) = gap {
                        // Spacing between measured starts, not synchronisation.
                        std::thread::sleep(g);
                    }
                    times[k].push(run().expect("a start that worked before failed"));
                }
            }
        }
        for ((label, _), v) in kinds.iter().zip(times) {
            match gap {
                None => show(label, v),
                Some(g) => show(&format!("{label}, {} ms apart", g.as_millis()), v),
            }
        }
    }
}

/// A start measured by a closure: its time, or `None` when it could not run.
type Run<'a> = Box<dyn Fn() -> Option<Duration> + 'a>;

/// Row 2: a trivial wasm task through the whole sandbox.
fn wasm_trivial(sb: &Sandbox, limits: &Limits, n: usize) {
    let mut spec = TaskSpec::wasm(HELLO.to_vec());
    spec.limits = limits.clone();
    sb.run(&spec).expect("warm cache");
    let mut v = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let out = sb.run(&spec).expect("run");
        v.push(t.elapsed());
        assert!(matches!(out, TaskOutcome::Completed { exit_code: 0, .. }));
    }
    show("sandbox wasm trivial (cached module)", v);
}

/// The trivial module of row 2.
const HELLO: &[u8] = br#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1) (data (i32.const 0) "\10\00\00\00\03\00\00\00") (data (i32.const 16) "hi\n")
        (func (export "_start") (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Row 3: instantiation of a cached module (in-process).
fn instantiate(engine: &WasmEngine, limits: &Limits) {
    let compiled = engine.compile(HELLO).expect("compile");
    let inv = Invocation {
        limits: limits.clone(),
        ..Default::default()
    };
    let mut v = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        let c = engine.compile(HELLO).expect("cached");
        let inst = engine.instantiate(&c, &inv).expect("instantiate");
        v.push(t.elapsed());
        drop(inst);
    }
    drop(compiled);
    show("cache lookup + instantiate (in-process)", v);
}

/// A kernel from `benches/kernels/` compiled for wasm32-wasip1 at opt-level 3 with
/// the target's features and `features` (`-C target-feature`), or `None` when the
/// target is missing.
fn kernel_wasm(tmp: &Path, name: &str, features: &str) -> Option<Vec<u8>> {
    let wasm_path = tmp.join(format!("{name}{features}.wasm"));
    let ok = Command::new("rustc")
        .args([
            "--target",
            "wasm32-wasip1",
            "-C",
            "opt-level=3",
            "-C",
            &format!("target-feature={features}"),
            "--edition",
            "2021",
            "-o",
        ])
        .arg(&wasm_path)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/kernels/{name}.rs")))
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| std::fs::read(&wasm_path).expect("wasm"))
}

/// A module's `_start` on a bare engine of `config` (no askee runtime around it):
/// the elapsed time and the standard output.
fn run_on_config(config: &wasmtime::Config, bytes: &[u8]) -> (Duration, Vec<u8>) {
    use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
    let engine = wasmtime::Engine::new(config).expect("engine");
    let module = wasmtime::Module::new(&engine, bytes).expect("module");
    let mut linker = wasmtime::Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).expect("linker");
    let stdout = MemoryOutputPipe::new(1 << 20);
    let wasi = wasmtime_wasi::WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .build_p1();
    let mut store = wasmtime::Store::new(&engine, wasi);
    // Each configuration measured here is the worker's with one change: it meters fuel.
    store
        .set_fuel(askee_sandbox::runtime::MAX_FUEL)
        .expect("fuel");
    let instance = linker.instantiate(&mut store, &module).expect("instance");
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .expect("_start");
    let t = Instant::now();
    start.call(&mut store, ()).expect("run");
    (t.elapsed(), stdout.contents().to_vec())
}

/// `f`'s result, its elapsed time pushed onto `times`.
fn timed<T>(times: &mut Vec<Duration>, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    times.push(start.elapsed());
    out
}

/// The sieve (integers) and a matrix multiply (floating point), each native and
/// as a module on the worker's engine, with references measured in the same
/// rounds: the in-process engine (epoch checks as well) for the sieve, and for
/// the matrix multiply the worker's configuration without NaN
/// canonicalization (what the determinism costs floating-point code).
fn compute(tmp: &Path, engine: &askee_sandbox::runtime::WasmEngine) {
    let (Some(sieve_wasm), Some(matmul_wasm), Some(matmul_simd)) = (
        kernel_wasm(tmp, "sieve", ""),
        kernel_wasm(tmp, "matmul", ""),
        kernel_wasm(tmp, "matmul", "+simd128"),
    ) else {
        println!("kernels: wasm32-wasip1 target missing, skipped");
        return;
    };
    let inv = Invocation {
        limits: Limits {
            fuel: u64::MAX,
            wall_time: Duration::from_secs(600),
            memory_bytes: 256 << 20,
            ..Limits::default()
        },
        ..Default::default()
    };
    let epoch_engine =
        askee_sandbox::runtime::WasmEngine::new(None, askee_sandbox::runtime::Watchdog::Epoch)
            .expect("epoch engine");
    let sieve_module = engine.compile(&sieve_wasm).expect("compile sieve");
    let sieve_epoch = epoch_engine.compile(&sieve_wasm).expect("compile sieve");
    let matmul_module = engine.compile(&matmul_wasm).expect("compile matmul");
    let matmul_simd = engine.compile(&matmul_simd).expect("compile matmul");
    let mut no_canon =
        askee_sandbox::runtime::deterministic_config(askee_sandbox::runtime::Watchdog::External);
    no_canon.cranelift_nan_canonicalization(false);

    let mut t: [Vec<Duration>; 7] = Default::default();
    for _ in 0..5 {
        let total: u32 = timed(&mut t[0], || {
            (0..20)
                .map(|_| sieve::sieve(std::hint::black_box(2_000_000)))
                .sum()
        });
        let run = timed(&mut t[1], || engine.run(&sieve_module, &inv)).expect("run sieve");
        assert_eq!(run.stdout, format!("{total}\n").as_bytes(), "{:?}", run.end);
        let epoch_run =
            timed(&mut t[2], || epoch_engine.run(&sieve_epoch, &inv)).expect("run sieve");
        assert_eq!(epoch_run.stdout, run.stdout);
        assert_eq!(epoch_run.fuel_consumed, run.fuel_consumed);

        let total: f64 = timed(&mut t[3], || {
            (1..=4)
                .map(|seed| matmul::matmul(256, std::hint::black_box(seed)))
                .sum()
        });
        let run = timed(&mut t[4], || engine.run(&matmul_module, &inv)).expect("run matmul");
        assert_eq!(run.stdout, format!("{total}\n").as_bytes(), "{:?}", run.end);
        let (elapsed, stdout) = run_on_config(&no_canon, &matmul_wasm);
        t[5].push(elapsed);
        assert_eq!(stdout, run.stdout);
        let simd_run = timed(&mut t[6], || engine.run(&matmul_simd, &inv)).expect("run matmul");
        assert_eq!(simd_run.stdout, run.stdout);
    }
    let p50 = |v: &Vec<Duration>| pct(v.clone()).0.as_secs_f64();
    let ratio = |native: usize, wasm: usize| p50(&t[native]) / p50(&t[wasm]);
    let [a, b, c, d, e, f, g] = t.clone();
    show("sieve 20x2e6 native", a);
    show("sieve 20x2e6 wasm (worker engine: fuel, no epochs)", b);
    show("sieve 20x2e6 wasm (in-process engine: fuel + epochs)", c);
    show("matmul f64 4x256^2 native", d);
    show("matmul f64 4x256^2 wasm (worker engine)", e);
    show(
        "matmul f64 4x256^2 wasm (worker engine, NaNs as they come)",
        f,
    );
    show(
        "matmul f64 4x256^2 wasm built with +simd128 (worker engine)",
        g,
    );
    println!("wasm speed relative to native, sieve: {:.2}x", ratio(0, 1));
    println!(
        "wasm speed relative to native, sieve, with the epoch watchdog: {:.2}x",
        ratio(0, 2)
    );
    println!("wasm speed relative to native, matmul: {:.2}x", ratio(3, 4));
    println!(
        "wasm speed relative to native, matmul without NaN canonicalization: {:.2}x",
        ratio(3, 5)
    );
    println!(
        "wasm speed relative to native, matmul built with +simd128: {:.2}x",
        ratio(3, 6)
    );
}

/// Why workers join their cgroup through v1's `tasks`: a process moved through
/// `cgroup.procs` (by pid or `0`) takes the kernel's global threadgroup lock,
/// whose write side waits out an RCU grace period once it has gone cold; a
/// thread moving itself through `tasks` skips it. Each join follows 100 ms of
/// quiet, as a task start on an idle machine does; this thread moves back after
/// each. v1 hosts only (v2 has no per-thread join of domain cgroups).
fn cgroup_join() {
    use askee_sandbox::cgroup::{CgroupLayout, TaskCgroup};
    let Some(layout) = CgroupLayout::detect()
        .ok()
        .filter(|l| l.enforcing_version() == Some(1))
    else {
        println!("cgroup join: no v1 hierarchy enforcing, skipped");
        return;
    };
    let cg = TaskCgroup::create(
        &layout,
        &format!("askee-bench-{}", std::process::id()),
        &Limits::default(),
    )
    .expect("bench cgroup");
    let tasks = cg.join_files();
    let join = |files: &[PathBuf], name: &str| {
        for f in files {
            std::fs::write(f.with_file_name(name), "0").expect("join");
        }
    };
    // The task cgroup's parents: this process's own cgroups.
    let home: Vec<PathBuf> = tasks
        .iter()
        .map(|f| {
            f.parent()
                .and_then(Path::parent)
                .expect("parent")
                .join("tasks")
        })
        .collect();
    let (mut procs_t, mut tasks_t) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for (name, times) in [("cgroup.procs", &mut procs_t), ("tasks", &mut tasks_t)] {
            // Quiet before the join, not synchronisation.
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            join(&tasks, name);
            times.push(t.elapsed());
            // Back the same way (`cgroup.procs` moved every thread).
            join(&home, name);
        }
    }
    let n = tasks.len();
    show(
        &format!("join {n} v1 cgroups through cgroup.procs"),
        procs_t,
    );
    show(
        &format!("join {n} v1 cgroups through tasks (the worker's way)"),
        tasks_t,
    );
    cg.remove().expect("remove bench cgroup");
}
