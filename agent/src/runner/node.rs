//! The node at the coordinator: registration and heartbeats.

use super::*;

impl Runner {
    pub(super) async fn register(&self) -> Result<NodeRegistered, ClientError> {
        let token = self.token();
        let challenge: NodeChallenge = self
            .coord
            .signed_post("/v1/nodes/challenge", &ChallengeRequest::default())
            .await?;
        let attestation = signing::sign_attestation(
            &self.key,
            &challenge.challenge,
            &token.payload.token_id,
            &self.profile,
        );
        let reg: NodeRegistered = self
            .coord
            .signed_post(
                "/v1/nodes/register",
                &NodeRegistration {
                    challenge: challenge.challenge,
                    consent_token: token.token.clone(),
                    profile: self.profile.clone(),
                    attestation,
                },
            )
            .await?;
        *self.node_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(reg.state);
        *self
            .heartbeat_every
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Duration::from_secs(reg.heartbeat_interval_seconds.clamp(1, 300));
        self.journal(
            "node.register",
            serde_json::json!({"state": reg.state.as_str(), "reputation": reg.reputation}),
        );
        Ok(reg)
    }

    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        loop {
            let every = *self
                .heartbeat_every
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            tokio::time::sleep(every).await;
            if *self.consent.borrow() != Consent::Active {
                continue;
            }
            let beat = Heartbeat {
                running: self.exec.registry().running(),
                accepting_work: self.activity.borrow().is_idle()
                    && self.slots.available_permits() > 0,
            };
            let ack: Result<HeartbeatAck, _> =
                self.coord.signed_post("/v1/nodes/heartbeat", &beat).await;
            match ack {
                Ok(ack) => {
                    for id in &ack.abandon {
                        if self.exec.registry().terminate(id) {
                            self.journal("task.abandon", serde_json::json!({"assignment_id": id}));
                        }
                    }
                    *self.node_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(ack.state);
                    match ack.state {
                        NodeState::Byzantine | NodeState::Revoked => {
                            self.set_consent(Consent::Ended(format!(
                                "coordinator lists this node as {}",
                                ack.state.as_str()
                            )))
                        }
                        NodeState::Offline | NodeState::Active => {}
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }
}
