//! Idle sources on this platform: not written yet (the seed names
//! GetLastInputInfo / IOKit HIDIdleTime and the performance counters), so
//! the agent refuses to decide rather than guess.

use crate::idle::{Sensors, SourceError};
use crate::yielder::TaskSet;

pub fn host_sensors(_tasks: TaskSet) -> Result<Sensors, SourceError> {
    Err(SourceError::Unsupported {
        what: "unsupported",
    })
}
