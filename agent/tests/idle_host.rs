//! Smoke test: the real idle sources of this machine parse and stay in range.
//! A headless VM without logind or input devices is a legitimate outcome
//! (the input source is then `none`), not a failure.

use std::time::{Duration, Instant};

use askee_agent::idle::Sensors;
use askee_agent::yielder::TaskSet;
use askee_core::idle::Power;

#[test]
fn host_sources_read_and_are_in_range() {
    let mut s = Sensors::host(TaskSet::new()).expect("linux has idle sources");
    // This test binary is running; the made-up name is not.
    let me = std::env::current_exe().unwrap();
    let me = me.file_name().unwrap().to_string_lossy().into_owned();
    s.exclusive = vec![me.clone(), "no-such-program-xyz".into()];
    let started = Instant::now();
    let first = s.read(started);
    // CPU and network need a previous sample: the first reading has none.
    assert_eq!(first.reading.cpu_percent, None);
    assert_eq!(first.reading.network_bytes_per_sec, None);
    // Read until a clock tick has passed (bounded), then check the ranges.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sample = loop {
        let s2 = s.read(started);
        if s2.reading.cpu_percent.is_some() {
            break s2;
        }
        assert!(Instant::now() < deadline, "no cpu tick within 10 s");
        std::thread::yield_now();
    };
    assert!(
        sample.errors.is_empty(),
        "source errors: {:?}",
        sample.errors
    );
    let r = &sample.reading;
    let cpu = r.cpu_percent.unwrap();
    assert!((0.0..=100.0).contains(&cpu), "cpu {cpu}");
    assert!(r.network_bytes_per_sec.is_some());
    let used = r.memory_used.expect("meminfo parses");
    assert!(used > 0.0 && used < 1.0, "memory used {used}");
    if let Some(stall) = r.memory_stall {
        assert!((0.0..=1.0).contains(&stall));
    }
    if let Power::Battery { percent } = r.power {
        assert!(percent <= 100);
    }
    assert_eq!(r.exclusive_running, vec![me]);
    eprintln!("input source: {}, reading: {r:?}", s.input.kind());
    if let Some(idle) = r.input_idle_secs {
        assert!(idle < 400 * 86_400 * 365, "input idle {idle} s");
    }
}

/// The real monitor on the real sources, built and dropped inside a tokio
/// runtime (as the work loop does): its verdict moves past "starting".
#[test]
fn monitor_runs_on_host_sources_inside_tokio() {
    use askee_agent::activity::Activity;
    use askee_agent::idle::{IdleMonitor, STARTING};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sensors = Sensors::host(TaskSet::new()).unwrap();
        let mut rx = IdleMonitor {
            sensors,
            thresholds: askee_core::idle::IdleThresholds::default(),
            interval: Duration::from_millis(10),
        }
        .spawn();
        let moved = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|a| !matches!(a, Activity::Busy { reason } if reason == STARTING)),
        )
        .await
        .expect("a verdict within 10 s")
        .expect("the monitor is running")
        .clone();
        // Default thresholds need 300 s of quiet: never idle this soon.
        assert!(!moved.is_idle(), "{moved:?}");
    });
}
