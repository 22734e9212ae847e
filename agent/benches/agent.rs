//! Agent benchmarks (a bench binary, not timed tests):
//! 1. the idle monitor's own overhead: CPU share and resident memory of a
//!    process that runs only the monitor (`askee-agent monitor`);
//! 2. freeze latency: from `TaskControl::freeze` to the kernel reporting the
//!    task frozen, for a spinning task in the real sandbox;
//! 3. non-interference at full limits (targets: ≤2% throughput, ≤5% p99),
//!    judged as deployed (idle monitor and yielder on), with the tasks-held-
//!    running worst case printed beside it.
//!
//! `cargo bench -p askee-agent --bench agent [-- SECONDS] [--only-interference]
//! [--interference-secs=S]` (default 10 s for the monitor, 2 s per
//! non-interference measurement).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use askee_agent::interference::{self, Options};

fn ticks_and_rss(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss_kb)
}

fn monitor_overhead(secs: u64, interval_ms: u64) {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!("sample_interval_ms = {interval_ms}\nexclusive_programs = [\"steam\", \"zoom\"]\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_askee-agent"))
        .arg("--home")
        .arg(home.path())
        .args(["monitor", "--for-secs", &(secs + 5).to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let it start, then measure a window of `secs`.
    std::thread::sleep(Duration::from_secs(2));
    let (t0, _) = ticks_and_rss(child.id());
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, rss_kb) = ticks_and_rss(child.id());
    let wall = start.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    // USER_HZ is 100 on Linux.
    let cpu_pct = (t1 - t0) as f64 / 100.0 / wall * 100.0;
    println!(
        "monitor overhead  interval {interval_ms:>4} ms  cpu {cpu_pct:.3}% of one core over {wall:.1} s  peak rss {:.1} MiB   (targets <0.5%, <30 MiB)",
        rss_kb as f64 / 1024.0
    );
}

fn freeze_latency() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, spec) = common::spinning(dir.path());
    let running = sandbox.spawn(&spec).unwrap();
    let ctl = running.control();
    while ctl.pids().len() < 2 {
        std::thread::yield_now();
    }
    let mut samples = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        ctl.freeze().unwrap();
        while !ctl.is_frozen().unwrap() {
            std::thread::yield_now();
        }
        samples.push(t.elapsed());
        ctl.thaw().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    ctl.terminate();
    let _ = running.wait();
    samples.sort();
    println!(
        "freeze latency    median {:?}  p90 {:?}  max {:?}  over {} freezes (target: within 100 ms of busy)",
        samples[samples.len() / 2],
        samples[samples.len() * 9 / 10],
        samples[samples.len() - 1],
        samples.len()
    );
}

fn non_interference(seconds: f64) {
    let home = tempfile::tempdir().unwrap();
    let opts = Options {
        seconds,
        cpu_percent: 100,
        memory_mb: 512,
        bound_percent: 5.0,
        worker: Some(PathBuf::from(env!("CARGO_BIN_EXE_askee-agent-worker"))),
        probe_program: Some(PathBuf::from(env!("CARGO_BIN_EXE_askee-agent"))),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt
        .block_on(interference::validate(home.path(), &opts))
        .unwrap();
    let m = |name: &str| report.measurements.iter().find(|m| m.name == name).unwrap();
    let (tp, p99) = (m("foreground throughput"), m("latency probe p99"));
    print!(
        "non-interference (targets: throughput ≤2%, p99 ≤5%, judged as deployed)\n\
         throughput  as deployed {:+.1}% ({})  held running {:+.1}%\n\
         latency p99 as deployed {:+.1}% ({})  held running {:+.1}%\n{}",
        tp.deployed_degradation_percent,
        if tp.deployed_degradation_percent <= 2.0 {
            "met"
        } else {
            "missed"
        },
        tp.degradation_percent,
        p99.deployed_degradation_percent,
        if p99.deployed_degradation_percent <= 5.0 {
            "met"
        } else {
            "missed"
        },
        p99.degradation_percent,
        report.words()
    );
}

fn main() {
    let secs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<u64>().ok())
        .unwrap_or(10);
    if !std::env::args().any(|a| a == "--only-interference") {
        monitor_overhead(secs, 1000);
        monitor_overhead(secs, 100);
        freeze_latency();
    }
    // Seconds per non-interference measurement (each probe runs three times).
    let interference_secs = std::env::args()
        .find_map(|a| a.strip_prefix("--interference-secs=")?.parse::<f64>().ok())
        .unwrap_or(2.0);
    non_interference(interference_secs);
}
