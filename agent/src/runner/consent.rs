//! Watching consent: the revocation long-poll, the signed revocation list,
//! the expiry timer, renewal and a newly granted token.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct WatchAnswer {
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

impl Runner {
    /// Registers, then long-polls the revocation URL; on failure falls back to
    /// the signed revocation list and pauses when that is stale.
    pub(super) async fn consent_loop(self: Arc<Self>) {
        let mut epochs = self.token_epoch.subscribe();
        let mut attempt = 0u32;
        let mut registered_epoch = None;
        loop {
            let epoch = *epochs.borrow_and_update();
            let token = self.token();
            if token.payload.expires_at <= now() {
                self.set_consent(Consent::Ended("consent token expired".into()));
            }
            if matches!(*self.consent.borrow(), Consent::Ended(_)) {
                // Nothing to watch until a new token arrives.
                let _ = epochs.changed().await;
                continue;
            }
            if registered_epoch != Some(epoch) {
                match self.register().await {
                    Ok(reg) if reg.state == NodeState::Active => {
                        registered_epoch = Some(epoch);
                        attempt = 0;
                    }
                    Ok(reg) => {
                        self.set_consent(Consent::Ended(format!(
                            "coordinator lists this node as {}",
                            reg.state.as_str()
                        )));
                        continue;
                    }
                    Err(e) if Coordinator::is_refusal(&e) => {
                        // A refused registration (token revoked, expired or
                        // unknown) is checked against the revocation URL below.
                        tracing::warn!(error = %e, "registration refused");
                        self.set_consent(Consent::Paused(format!("registration refused: {e}")));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach the coordinator to register");
                        self.set_consent(Consent::Paused("coordinator unreachable".into()));
                        self.crl_check(&token).await;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff(attempt)) => {}
                            _ = epochs.changed() => {}
                        }
                        attempt += 1;
                        continue;
                    }
                }
            }
            // The long-poll answers "active" only when its wait runs out, so
            // the first look after (re)registering must not wait: work starts
            // as soon as the token is known to be good.
            let wait = if *self.consent.borrow() == Consent::Active {
                WATCH_WAIT
            } else {
                Duration::ZERO
            };
            let path = format!("/revoke/{}?wait={}", token.payload.token_id, wait.as_secs());
            let answer = tokio::select! {
                a = self.coord.get_long::<WatchAnswer>(&path, wait) => a,
                _ = epochs.changed() => continue,
            };
            match answer {
                Ok(a) if a.status == "active" => {
                    attempt = 0;
                    if registered_epoch == Some(epoch) {
                        self.set_consent(Consent::Active);
                    }
                }
                Ok(a) => {
                    let why = match a.reason {
                        Some(r) => format!("consent {}: {r}", a.status),
                        None => format!("consent {}", a.status),
                    };
                    self.set_consent(Consent::Ended(why));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation long-poll failed; checking the revocation list");
                    self.crl_check(&token).await;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(attempt)) => {}
                        _ = epochs.changed() => {}
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The fallback: the coordinator-signed revocation list, cached on disk.
    /// A list naming our grant ends consent; no fresh list pauses work.
    pub(super) async fn crl_check(&self, token: &ConsentToken) {
        let cache = self.home.dir().join("revocations.json");
        let fetched: Result<SignedRevocationList, _> = self.coord.get("/v1/revocations").await;
        let signed = match fetched {
            Ok(list) => {
                let _ = std::fs::write(&cache, serde_json::to_vec(&list).unwrap_or_default());
                Some(list)
            }
            Err(_) => std::fs::read(&cache)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        };
        let issuer = b64::public_key(&token.payload.issuer);
        let list = match (signed, issuer) {
            (Some(s), Ok(key)) => signing::open_revocation_list(&key, &s).ok(),
            _ => None,
        };
        match list {
            Some(l)
                if l.revoked
                    .iter()
                    .any(|r| r.grant_id == token.payload.grant_id) =>
            {
                self.set_consent(Consent::Ended(
                    "grant listed in the signed revocation list".into(),
                ));
            }
            Some(l) if l.next_update > now() => {
                // The list vouches for the grant until next_update; the
                // long-poll will be retried.
            }
            _ => self.set_consent(Consent::Paused(
                "revocation status unknown and the revocation list is stale".into(),
            )),
        }
    }

    /// Ends consent at the token's expiry unless it was renewed.
    pub(super) async fn expiry_loop(self: Arc<Self>) {
        let mut epochs = self.token_epoch.subscribe();
        loop {
            epochs.borrow_and_update();
            let expires = self.token().payload.expires_at;
            let left = Duration::from_secs(expires.saturating_sub(now()).max(0) as u64);
            tokio::select! {
                _ = tokio::time::sleep(left) => {
                    if self.token().payload.expires_at <= now() {
                        self.set_consent(Consent::Ended("consent token expired".into()));
                        let _ = epochs.changed().await;
                    }
                }
                _ = epochs.changed() => {}
            }
        }
    }

    /// Renews the token when two thirds of its life have passed.
    pub(super) async fn renewal_loop(self: Arc<Self>) {
        let mut attempt = 0u32;
        loop {
            let p = self.token().payload;
            let at = p.issued_at + (p.expires_at - p.issued_at) * 2 / 3;
            let wait = Duration::from_secs(at.saturating_sub(now()).max(0) as u64);
            tokio::time::sleep(wait).await;
            if matches!(*self.consent.borrow(), Consent::Ended(_)) {
                // Wait for a new grant to replace the token.
                let mut epochs = self.token_epoch.subscribe();
                epochs.borrow_and_update();
                let _ = epochs.changed().await;
                continue;
            }
            let renewed: Result<ConsentToken, _> = self
                .coord
                .signed_post(
                    "/v1/tokens/renew",
                    &serde_json::json!({"token_id": p.token_id}),
                )
                .await;
            match renewed {
                Ok(t) if t.payload.subject == p.subject && t.payload.grant_id == p.grant_id => {
                    attempt = 0;
                    self.journal(
                        "consent.renew",
                        serde_json::json!({"token_id": t.payload.token_id, "expires_at": t.payload.expires_at}),
                    );
                    self.replace_token(t);
                }
                Ok(_) => {
                    tracing::error!("renewal answered a token for another node or grant; ignored");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token renewal failed");
                    if Coordinator::is_refusal(&e) {
                        // The grant ended; the consent loop will learn why.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    } else {
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                    }
                }
            }
        }
    }

    pub(super) fn replace_token(&self, token: ConsentToken) {
        if let Ok(mut state) = self.home.state() {
            state.token = Some(token.clone());
            if let Err(e) = self.home.save(&state) {
                tracing::error!(error = %e, "cannot save the renewed token");
            }
        }
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        self.token_epoch.send_modify(|n| *n += 1);
    }

    /// After consent ended, watches the home for a new grant (made with
    /// `askee-agent consent grant`) and resumes with it.
    pub(super) async fn new_grant_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if !matches!(*self.consent.borrow(), Consent::Ended(_)) {
                continue;
            }
            let Ok(state) = self.home.state() else {
                continue;
            };
            let Some(fresh) = state.token else { continue };
            if fresh.payload.token_id == self.token().payload.token_id
                || fresh.payload.expires_at <= now()
            {
                continue;
            }
            self.journal(
                "consent.new_token",
                serde_json::json!({"token_id": fresh.payload.token_id}),
            );
            *self.token.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
            // Leave `Ended` explicitly: only a new token may.
            self.consent
                .send_replace(Consent::Paused("registering the new token".into()));
            self.token_epoch.send_modify(|n| *n += 1);
        }
    }
}
