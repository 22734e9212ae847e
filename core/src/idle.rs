//! The idle decision: whether a volunteer's machine is free for work, from one
//! reading of the host and the history of earlier readings. Pure: the agent's
//! idle monitor does the measuring and calls [`assess`] once per sample.
//!
//! The seed's criteria, each a configurable [`IdleThresholds`] field: CPU below
//! 20% for 300 s (excluding the agent and its tasks), no input for 600 s, no
//! network activity (beyond a small rate) for 300 s, memory use below 0.8,
//! battery at 30% or more or on mains, and no exclusive program running.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The thresholds of the idle decision. Every field has the seed's default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdleThresholds {
    /// Highest CPU use, in percent of the whole machine, by everything except
    /// the agent and its tasks.
    pub cpu_percent_max: f64,
    /// How long CPU use must stay at or below `cpu_percent_max`.
    pub cpu_quiet_secs: u64,
    /// How long since the last keyboard, mouse or touch input.
    pub input_quiet_secs: u64,
    /// Network traffic (received plus sent, all non-loopback interfaces) at or
    /// below this rate counts as no activity.
    pub network_bytes_per_sec_max: u64,
    /// How long the network must stay quiet.
    pub network_quiet_secs: u64,
    /// Highest share of memory in use (1 − available/total), 0..1.
    pub memory_used_max: f64,
    /// Highest memory pressure stall (the kernel's PSI `some avg10`), 0..1.
    pub memory_stall_max: f64,
    /// Lowest battery charge, in percent, when running on battery.
    pub battery_percent_min: u8,
}

impl Default for IdleThresholds {
    fn default() -> Self {
        Self {
            cpu_percent_max: 20.0,
            cpu_quiet_secs: 300,
            input_quiet_secs: 600,
            network_bytes_per_sec_max: 32 * 1024,
            network_quiet_secs: 300,
            memory_used_max: 0.8,
            memory_stall_max: 0.2,
            battery_percent_min: 30,
        }
    }
}

/// Where the machine's power comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "source")]
pub enum Power {
    Mains,
    Battery {
        percent: u8,
    },
    /// No battery found (a desktop or a server) or no way to tell.
    Unknown,
}

/// One sample of the host. `None` means the source has no value this time
/// (see each field for what that implies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Monotonic time of the sample, in milliseconds.
    pub at_ms: u64,
    /// CPU use since the previous sample, percent of the whole machine,
    /// without the agent and its tasks. `None` (the first sample, or an
    /// unreadable source) fails closed: the CPU does not count as quiet.
    pub cpu_percent: Option<f64>,
    /// Seconds since the last user input. `None` means the machine has no
    /// input source at all (a headless server): the condition holds.
    pub input_idle_secs: Option<u64>,
    /// Network traffic since the previous sample. `None` fails closed.
    pub network_bytes_per_sec: Option<u64>,
    /// Share of memory in use, 0..1. `None`: not checked.
    pub memory_used: Option<f64>,
    /// PSI memory `some avg10` as a fraction, 0..1. `None` (no PSI): not checked.
    pub memory_stall: Option<f64>,
    pub power: Power,
    /// Names of the exclusive programs found running.
    pub exclusive_running: Vec<String>,
}

/// What earlier readings established: since when the conditions that need
/// a quiet period have held without interruption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub cpu_quiet_since_ms: Option<u64>,
    pub network_quiet_since_ms: Option<u64>,
}

/// Why the machine is not idle; `Display` gives plain words.
#[derive(Debug, Clone, PartialEq)]
pub enum Busy {
    Exclusive { program: String },
    Battery { percent: u8, min: u8 },
    Input { idle_secs: u64, needed_secs: u64 },
    MemoryUsed { used: f64, max: f64 },
    MemoryStall { stall: f64, max: f64 },
    CpuUnknown,
    Cpu { percent: f64, max: f64 },
    CpuNotLongEnough { quiet_secs: u64, needed_secs: u64 },
    NetworkUnknown,
    Network { bytes_per_sec: u64, max: u64 },
    NetworkNotLongEnough { quiet_secs: u64, needed_secs: u64 },
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Busy::Exclusive { program } => write!(f, "{program} is running (an exclusive program)"),
            Busy::Battery { percent, min } => {
                write!(
                    f,
                    "on battery at {percent}% (work needs {min}% or mains power)"
                )
            }
            Busy::Input {
                idle_secs,
                needed_secs,
            } => write!(
                f,
                "keyboard or mouse used {idle_secs} s ago (work waits {needed_secs} s)"
            ),
            Busy::MemoryUsed { used, max } => write!(
                f,
                "{:.0}% of memory in use (work needs at most {:.0}%)",
                used * 100.0,
                max * 100.0
            ),
            Busy::MemoryStall { stall, max } => write!(
                f,
                "programs stalled on memory {:.0}% of the time (work needs at most {:.0}%)",
                stall * 100.0,
                max * 100.0
            ),
            Busy::CpuUnknown => write!(f, "measuring CPU use"),
            Busy::Cpu { percent, max } => {
                write!(f, "CPU {percent:.0}% busy (work needs at most {max:.0}%)")
            }
            Busy::CpuNotLongEnough {
                quiet_secs,
                needed_secs,
            } => write!(
                f,
                "CPU quiet for {quiet_secs} s of the {needed_secs} s needed"
            ),
            Busy::NetworkUnknown => write!(f, "measuring network traffic"),
            Busy::Network { bytes_per_sec, max } => write!(
                f,
                "network busy at {} KiB/s (quiet means at most {} KiB/s)",
                bytes_per_sec / 1024,
                max / 1024
            ),
            Busy::NetworkNotLongEnough {
                quiet_secs,
                needed_secs,
            } => write!(
                f,
                "network quiet for {quiet_secs} s of the {needed_secs} s needed"
            ),
        }
    }
}

fn quiet_since(prev: Option<u64>, quiet: bool, at_ms: u64) -> Option<u64> {
    quiet.then(|| prev.unwrap_or(at_ms).min(at_ms))
}

/// Decides from one reading and the history before it. Returns the new
/// history and `Ok(())` when the machine is idle, or the first failing
/// condition, in this order: exclusive program, battery, input, memory, CPU,
/// network. The quiet-period histories are updated whatever the verdict.
pub fn assess(t: &IdleThresholds, history: &History, r: &Reading) -> (History, Result<(), Busy>) {
    let cpu_quiet = r.cpu_percent.is_some_and(|p| p <= t.cpu_percent_max);
    let net_quiet = r
        .network_bytes_per_sec
        .is_some_and(|b| b <= t.network_bytes_per_sec_max);
    let next = History {
        cpu_quiet_since_ms: quiet_since(history.cpu_quiet_since_ms, cpu_quiet, r.at_ms),
        network_quiet_since_ms: quiet_since(history.network_quiet_since_ms, net_quiet, r.at_ms),
    };
    let held = |since: Option<u64>| since.map(|s| (r.at_ms - s) / 1000).unwrap_or(0);
    let verdict = (|| {
        if let Some(program) = r.exclusive_running.first() {
            return Err(Busy::Exclusive {
                program: program.clone(),
            });
        }
        if let Power::Battery { percent } = r.power
            && percent < t.battery_percent_min
        {
            return Err(Busy::Battery {
                percent,
                min: t.battery_percent_min,
            });
        }
        if let Some(idle) = r.input_idle_secs
            && idle < t.input_quiet_secs
        {
            return Err(Busy::Input {
                idle_secs: idle,
                needed_secs: t.input_quiet_secs,
            });
        }
        if let Some(used) = r.memory_used
            && used > t.memory_used_max
        {
            return Err(Busy::MemoryUsed {
                used,
                max: t.memory_used_max,
            });
        }
        if let Some(stall) = r.memory_stall
            && stall > t.memory_stall_max
        {
            return Err(Busy::MemoryStall {
                stall,
                max: t.memory_stall_max,
            });
        }
        match r.cpu_percent {
            None => return Err(Busy::CpuUnknown),
            Some(p) if p > t.cpu_percent_max => {
                return Err(Busy::Cpu {
                    percent: p,
                    max: t.cpu_percent_max,
                });
            }
            Some(_) => {}
        }
        let cpu_held = held(next.cpu_quiet_since_ms);
        if cpu_held < t.cpu_quiet_secs {
            return Err(Busy::CpuNotLongEnough {
                quiet_secs: cpu_held,
                needed_secs: t.cpu_quiet_secs,
            });
        }
        match r.network_bytes_per_sec {
            None => return Err(Busy::NetworkUnknown),
            Some(b) if b > t.network_bytes_per_sec_max => {
                return Err(Busy::Network {
                    bytes_per_sec: b,
                    max: t.network_bytes_per_sec_max,
                });
            }
            Some(_) => {}
        }
        let net_held = held(next.network_quiet_since_ms);
        if net_held < t.network_quiet_secs {
            return Err(Busy::NetworkNotLongEnough {
                quiet_secs: net_held,
                needed_secs: t.network_quiet_secs,
            });
        }
        Ok(())
    })();
    (next, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(at_ms: u64) -> Reading {
        Reading {
            at_ms,
            cpu_percent: Some(3.0),
            input_idle_secs: Some(10_000),
            network_bytes_per_sec: Some(100),
            memory_used: Some(0.3),
            memory_stall: Some(0.0),
            power: Power::Mains,
            exclusive_running: vec![],
        }
    }

    /// Feeds `readings` in order from an empty history; returns the verdicts.
    fn run(t: &IdleThresholds, readings: &[Reading]) -> Vec<Result<(), Busy>> {
        let mut h = History::default();
        readings
            .iter()
            .map(|r| {
                let (next, v) = assess(t, &h, r);
                h = next;
                v
            })
            .collect()
    }

    #[test]
    fn idle_only_after_the_quiet_periods() {
        let t = IdleThresholds::default();
        let v = run(&t, &[quiet(1_000), quiet(200_000), quiet(301_000)]);
        assert!(matches!(
            v[0],
            Err(Busy::CpuNotLongEnough { quiet_secs: 0, .. })
        ));
        assert!(matches!(
            v[1],
            Err(Busy::CpuNotLongEnough {
                quiet_secs: 199,
                ..
            })
        ));
        assert_eq!(v[2], Ok(()));
    }

    #[test]
    fn a_cpu_spike_restarts_the_cpu_quiet_period() {
        let t = IdleThresholds::default();
        let mut spike = quiet(200_000);
        spike.cpu_percent = Some(55.0);
        let v = run(
            &t,
            &[
                quiet(0),
                spike,
                quiet(300_000),
                quiet(599_000),
                quiet(600_000),
            ],
        );
        assert_eq!(
            v[1],
            Err(Busy::Cpu {
                percent: 55.0,
                max: 20.0
            })
        );
        assert!(matches!(
            v[2],
            Err(Busy::CpuNotLongEnough { quiet_secs: 0, .. })
        ));
        assert!(v[3].is_err());
        assert_eq!(v[4], Ok(()));
    }

    #[test]
    fn network_traffic_restarts_the_network_quiet_period() {
        let t = IdleThresholds::default();
        let mut busy = quiet(301_000);
        busy.network_bytes_per_sec = Some(10 << 20);
        let v = run(&t, &[quiet(0), busy, quiet(302_000), quiet(603_000)]);
        assert!(matches!(v[1], Err(Busy::Network { .. })));
        assert!(matches!(
            v[2],
            Err(Busy::NetworkNotLongEnough { quiet_secs: 0, .. })
        ));
        assert_eq!(v[3], Ok(()));
    }

    #[test]
    fn unknown_cpu_or_network_fails_closed_but_unknown_input_does_not() {
        let t = IdleThresholds::default();
        let mut r = quiet(400_000);
        r.cpu_percent = None;
        assert_eq!(run(&t, &[quiet(0), r])[1], Err(Busy::CpuUnknown));
        let mut r = quiet(400_000);
        r.network_bytes_per_sec = None;
        assert_eq!(run(&t, &[quiet(0), r])[1], Err(Busy::NetworkUnknown));
        let mut r = quiet(400_000);
        r.input_idle_secs = None;
        r.memory_used = None;
        r.memory_stall = None;
        r.power = Power::Unknown;
        assert_eq!(run(&t, &[quiet(0), r])[1], Ok(()));
    }

    #[test]
    fn each_condition_names_itself_in_priority_order() {
        let t = IdleThresholds::default();
        let mut r = quiet(400_000);
        r.exclusive_running = vec!["steam".into()];
        r.power = Power::Battery { percent: 10 };
        r.input_idle_secs = Some(5);
        let v = run(&t, &[quiet(0), r.clone()]);
        assert_eq!(
            v[1].as_ref().unwrap_err().to_string(),
            "steam is running (an exclusive program)"
        );
        r.exclusive_running.clear();
        let v = run(&t, &[quiet(0), r.clone()]);
        assert_eq!(
            v[1],
            Err(Busy::Battery {
                percent: 10,
                min: 30
            })
        );
        r.power = Power::Battery { percent: 30 };
        let v = run(&t, &[quiet(0), r.clone()]);
        assert_eq!(
            v[1].as_ref().unwrap_err().to_string(),
            "keyboard or mouse used 5 s ago (work waits 600 s)"
        );
        r.input_idle_secs = Some(600);
        r.memory_used = Some(0.9);
        let v = run(&t, &[quiet(0), r.clone()]);
        assert!(matches!(v[1], Err(Busy::MemoryUsed { .. })));
        r.memory_used = Some(0.8);
        r.memory_stall = Some(0.5);
        let v = run(&t, &[quiet(0), r.clone()]);
        assert!(matches!(v[1], Err(Busy::MemoryStall { .. })));
        r.memory_stall = Some(0.2);
        assert_eq!(run(&t, &[quiet(0), r])[1], Ok(()));
    }

    #[test]
    fn thresholds_deserialise_with_defaults_for_missing_fields() {
        let t: IdleThresholds = serde_json::from_str(r#"{"cpu_quiet_secs": 5}"#).unwrap();
        assert_eq!(t.cpu_quiet_secs, 5);
        assert_eq!(t.input_quiet_secs, 600);
        assert!(serde_json::from_str::<IdleThresholds>(r#"{"cpu": 5}"#).is_err());
    }
}
