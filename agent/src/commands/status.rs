//! `status` and `revoke`: where consent stands, and withdrawing it.

use askee_core::wire::v1::{RevocationStatusResponse, RevokeRequest};
use serde_json::json;

use super::{CommandError, coordinator, open_journal};
use crate::describe;
use crate::home::Home;
use crate::runner::RunStatus;

/// `status`: the token, its limits, its state at the coordinator and what
/// the daemon last published.
pub async fn status(home: &Home) -> Result<(), CommandError> {
    let state = home.state()?;
    let Some(token) = &state.token else {
        println!("no consent granted");
        return Ok(());
    };
    let client = coordinator(home, &state)?;
    let status: RevocationStatusResponse = client
        .get(&format!("/revoke/{}", token.payload.token_id))
        .await?;
    println!("token {}: {}", token.payload.token_id, status.status);
    println!("limits: {}", describe::limits(&token.payload.permissions));
    println!("expires at {} (unix time)", token.payload.expires_at);
    match RunStatus::read(home.dir()) {
        Some(r) => print_run_status(&r),
        None => println!("the agent is not running (start it with `askee-agent run`)"),
    }
    Ok(())
}

fn print_run_status(r: &RunStatus) {
    println!(
        "agent (pid {}, as of unix time {}): consent {}, machine {}",
        r.pid, r.updated_at, r.consent, r.activity
    );
    if let Some(state) = &r.node_state {
        println!("node state at the coordinator: {state}");
    }
    if r.running.is_empty() {
        println!("nothing is running");
    } else {
        println!("running: {}", r.running.join(", "));
    }
    println!(
        "tasks completed {}, failed {}, cpu used {:.1} s, results awaiting upload {}",
        r.completed,
        r.failed,
        r.cpu_ms_total as f64 / 1000.0,
        r.pending_uploads
    );
}

/// `revoke`: withdraws consent now, and journals why.
pub async fn revoke(home: &Home, reason: &str) -> Result<(), CommandError> {
    let state = home.state()?;
    let token = state.token.as_ref().ok_or(CommandError::NoConsent)?;
    let client = coordinator(home, &state)?;
    let status: RevocationStatusResponse = client
        .signed_post(
            &format!("/v1/tokens/{}/revoke", token.payload.token_id),
            &RevokeRequest {
                reason: reason.to_owned(),
            },
        )
        .await?;
    open_journal(home)?.append(
        "consent.revoke",
        json!({ "token_id": token.payload.token_id, "reason": reason }),
    )?;
    println!(
        "consent revoked: token {} is {}",
        token.payload.token_id, status.status
    );
    Ok(())
}
