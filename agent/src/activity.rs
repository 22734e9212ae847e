//! Whether the machine is free for volunteer work. The idle monitor
//! publishes an [`Activity`] on a `tokio::sync::watch` channel; the work loop
//! and the yielder only read it, so every source of "busy" (input, CPU,
//! memory pressure, battery, an exclusive program, revocation) reaches them
//! through one value.

/// The idle monitor's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    /// Every idle condition holds: work may run.
    Idle,
    /// At least one condition fails; `reason` names the first, in plain words
    /// (e.g. `keyboard or mouse used 12 s ago`).
    Busy { reason: String },
}

impl Activity {
    pub fn is_idle(&self) -> bool {
        matches!(self, Activity::Idle)
    }
}
