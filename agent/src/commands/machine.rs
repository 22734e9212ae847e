//! Commands about this machine: `profile`, `validate-non-interference`, and
//! the hidden `probe` and `monitor` that measure the agent itself.

use std::path::Path;
use std::time::Duration;

use super::CommandError;
use crate::config::Config;
use crate::home::Home;
use crate::idle::{IdleMonitor, Sensors};
use crate::interference::{self, ProbeKind};
use crate::yielder::TaskSet;

/// `profile`: the system profile as JSON on stdout, in plain words on stderr.
pub fn profile(home: &Home) -> Result<(), CommandError> {
    let profile = crate::profile::assess(home.dir())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&profile).expect("the profile serialises")
    );
    eprint!("{}", crate::profile::words(&profile));
    Ok(())
}

/// `validate-non-interference`: prints the report; answers whether it passed.
pub async fn validate_non_interference(
    home: &Home,
    opts: &interference::Options,
) -> Result<bool, CommandError> {
    let report = interference::validate(home.dir(), opts).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("the report serialises")
    );
    eprint!("{}", report.words());
    Ok(report.passed())
}

/// `probe`: one non-interference probe in this process; prints its figure.
pub fn probe(kind: ProbeKind, seconds: f64, dir: &Path) -> Result<(), CommandError> {
    let d = Duration::from_secs_f64(seconds.max(0.0));
    let figure = interference::run_probe(kind, d, dir)?;
    println!("{figure}");
    Ok(())
}

/// `monitor`: only the idle monitor, printing each change, for `for_secs`
/// seconds (0: until interrupted).
pub async fn monitor(home: &Home, for_secs: u64) -> Result<(), CommandError> {
    let config = Config::load(home.dir())?;
    let mut sensors = Sensors::host(TaskSet::new())?;
    sensors.exclusive = config.exclusive_programs.clone();
    eprintln!("input source: {}", sensors.input.kind());
    let mut rx = IdleMonitor {
        sensors,
        thresholds: config.idle.clone(),
        interval: config.sample_interval(),
    }
    .spawn();
    let stop = async {
        if for_secs == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(for_secs)).await
        }
    };
    tokio::pin!(stop);
    loop {
        println!("{:?}", *rx.borrow_and_update());
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = &mut stop => return Ok(()),
        }
    }
}
