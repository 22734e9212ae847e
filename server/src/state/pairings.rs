//! The consent portal's one-time pairings, held in this process's memory
//! (a restart ends them); `service::portal` gives them meaning.

use std::collections::HashMap;
use std::sync::Mutex;

use askee_core::portal::ChoiceRequest;

#[derive(Debug, Clone)]
pub struct Pairing {
    pub node_key: String,
    /// The manifest to review; none for a status-only session.
    pub manifest_id: Option<String>,
    pub expires_at: i64,
    pub choice: Option<ChoiceRequest>,
    /// A grant for this pairing is being checked right now.
    pub granting: bool,
    pub granted: Option<Granted>,
}

/// The grant a pairing ended in.
#[derive(Debug, Clone)]
pub struct Granted {
    pub grant_id: String,
    pub token_id: String,
}

impl Pairing {
    /// `status`, `granted`, `chosen` or `review`, as the page shows it.
    pub fn state(&self) -> &'static str {
        if self.manifest_id.is_none() {
            "status"
        } else if self.granted.is_some() {
            "granted"
        } else if self.choice.is_some() {
            "chosen"
        } else {
            "review"
        }
    }
}

/// The pairings this process holds, keyed by the SHA-256 of their secret.
pub struct Pairings {
    by_session: Mutex<HashMap<String, Pairing>>,
    /// Bumped on every change, to wake long-polls.
    bumps: tokio::sync::watch::Sender<u64>,
}

impl Default for Pairings {
    fn default() -> Self {
        Self {
            by_session: Mutex::new(HashMap::new()),
            bumps: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Pairings {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pairing>> {
        // A panic while holding the lock cannot leave a pairing half-written
        // (every update is one assignment), so a poisoned map is still sound.
        self.by_session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every long-poll on a session.
    pub fn bump(&self) {
        self.bumps.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes after this call wake the receiver.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.bumps.subscribe()
    }
}
