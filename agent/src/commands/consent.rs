//! `init`, `join` and `consent review|grant|portal`: the node's identity and
//! the volunteer's opt-in, always signed with the node key.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use askee_core::signing::{self, manifest_digest};
use askee_core::wire::v1::{
    CapabilityManifest, GRANT_STATEMENT_VERSION, GrantResponse, GrantStatement, JoinRequest,
    ManifestResponse, Permissions,
};
use serde_json::json;

use super::{CommandError, coordinator, open_journal};
use crate::client::Coordinator;
use crate::clock::now;
use crate::config::Config;
use crate::describe;
use crate::home::{Home, State};

/// The limits of `consent grant`; each defaults to what the coordinator
/// proposed, and none may be wider.
#[derive(Debug, Clone, clap::Args)]
pub struct GrantArgs {
    /// Highest share of the CPU, in percent.
    #[arg(long)]
    pub cpu_percent: Option<u32>,
    /// Highest memory, in MiB.
    #[arg(long)]
    pub ram_mb: Option<u64>,
    /// Highest scratch disk, in GiB.
    #[arg(long)]
    pub storage_gb: Option<u64>,
    /// Highest network bandwidth, in Mbit/s.
    #[arg(long)]
    pub bandwidth_mbps: Option<u64>,
    /// Task types allowed, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub task_types: Option<Vec<String>>,
    /// Days until the consent ends (at most what the manifest offers).
    #[arg(long, default_value_t = 30)]
    pub days: i64,
    /// Grant without the interactive question (every limit flag is then required).
    #[arg(long)]
    pub yes: bool,
}

/// `init`: creates the node key (once) and the default settings.
pub fn init(home: &Home) -> Result<(), CommandError> {
    let (key, new) = home.init()?;
    let id = askee_core::b64::encode(key.verifying_key().as_bytes());
    if Config::write_default(home.dir())? {
        println!(
            "wrote default settings to {}",
            Config::path(home.dir()).display()
        );
    }
    if new {
        println!("created node key in {}\nnode id {id}", home.dir().display());
    } else {
        println!(
            "node key already exists in {}\nnode id {id}",
            home.dir().display()
        );
    }
    Ok(())
}

/// `join <coordinator>`: fetches the capability manifest and shows it.
pub async fn join(home: &Home, coordinator_url: &str) -> Result<(), CommandError> {
    let client = Coordinator::new(coordinator_url, home.key()?)?;
    let resp: ManifestResponse = client
        .signed_post(
            "/v1/invitations",
            &JoinRequest {
                node_public_key: client.node_id(),
            },
        )
        .await?;
    let ManifestResponse {
        manifest,
        manifest_digest: digest,
        ..
    } = resp;
    // What is shown must be what gets signed: check the digest here.
    if manifest_digest(&manifest) != digest {
        return Err(CommandError::ManifestDigest);
    }
    print!("{}", describe::manifest(&manifest));
    println!("\nTo accept, run `askee-agent consent grant`.");
    let mut state = home.state()?;
    state.coordinator = Some(coordinator_url.trim_end_matches('/').to_owned());
    open_journal(home)?.append(
        "consent.join",
        json!({
            "coordinator": state.coordinator,
            "operator": manifest.operator.name,
            "manifest_id": manifest.manifest_id,
            "manifest_digest": digest,
        }),
    )?;
    state.manifest = Some(manifest);
    state.manifest_digest = Some(digest);
    home.save(&state)?;
    Ok(())
}

/// `consent review`: the manifest held, in plain words.
pub fn review(home: &Home) -> Result<(), CommandError> {
    let state = home.state()?;
    let m = state.manifest.ok_or(CommandError::NoManifest)?;
    print!("{}", describe::manifest(&m));
    Ok(())
}

/// `consent grant`: signs a grant over the held manifest with the chosen
/// limits, after asking (unless `--yes`).
pub async fn grant(home: &Home, args: &GrantArgs) -> Result<(), CommandError> {
    let mut state = home.state()?;
    let client = coordinator(home, &state)?;
    let m = state.manifest.clone().ok_or(CommandError::NoManifest)?;
    let permissions = chosen_limits(args, &m.proposed)?;
    let ends = (now() + args.days * 86_400).min(m.grant_expires_at_max);
    if !args.yes {
        print!("{}", describe::manifest(&m));
        let question = format!("\nYou are granting: {}.", describe::limits(&permissions));
        if !confirm(&question)? {
            return Err(CommandError::NotGranted);
        }
    }
    let statement = GrantStatement {
        version: GRANT_STATEMENT_VERSION.into(),
        manifest_id: m.manifest_id.clone(),
        manifest_digest: manifest_digest(&m),
        node_public_key: client.node_id(),
        permissions,
        grant_expires_at: ends,
        signed_at: now(),
        nonce: uuid::Uuid::new_v4().simple().to_string(),
    };
    let signed = signing::sign_grant(&home.key()?, &statement);
    let resp: GrantResponse = client.post("/v1/grants", &signed).await?;
    save_grant(home, &mut state, resp, "cli")
}

/// `consent portal`: a one-time link to choose in the browser; what is
/// chosen there is checked and signed here.
pub async fn portal(home: &Home) -> Result<(), CommandError> {
    let mut state = home.state()?;
    let client = coordinator(home, &state)?;
    let pending = pending_manifest(&client, &state).await?;
    let pairing =
        crate::portal::pair(&client, pending.as_ref().map(|m| m.manifest_id.as_str())).await?;
    println!(
        "Open this link in your browser (keep it private: it shows your status and can revoke):"
    );
    println!("{}", pairing.url);
    let Some(m) = pending else {
        println!("nothing is waiting for consent; the link shows your status and lets you revoke");
        return Ok(());
    };
    println!("waiting for your choice in the page…");
    std::io::stdout().flush().map_err(CommandError::Terminal)?;
    let choice = crate::portal::wait_for_choice(&client, &pairing, &m, now).await?;
    println!(
        "You chose in the portal: {}; until {} (unix time).",
        describe::limits(&choice.permissions),
        choice.grant_expires_at
    );
    println!("signing the grant with this node's key…");
    let resp =
        crate::portal::sign_and_submit(&client, &home.key()?, &pairing, &m, &choice, now()).await?;
    save_grant(home, &mut state, resp, "portal")
}

/// The held manifest if the coordinator still has it pending: it is then
/// reviewed and granted in the page; otherwise the link opens the status
/// page only.
async fn pending_manifest(
    client: &Coordinator,
    state: &State,
) -> Result<Option<CapabilityManifest>, CommandError> {
    let Some(m) = state.manifest.clone() else {
        return Ok(None);
    };
    let at: ManifestResponse = client
        .get(&format!("/v1/manifests/{}", m.manifest_id))
        .await?;
    Ok((at.state == "pending").then_some(m))
}

/// The proposed permissions narrowed by the flags; with `--yes` every limit
/// must be given.
fn chosen_limits(args: &GrantArgs, proposed: &Permissions) -> Result<Permissions, CommandError> {
    if args.yes {
        let missing: Vec<&str> = [
            ("--cpu-percent", args.cpu_percent.is_none()),
            ("--ram-mb", args.ram_mb.is_none()),
            ("--storage-gb", args.storage_gb.is_none()),
            ("--bandwidth-mbps", args.bandwidth_mbps.is_none()),
            ("--task-types", args.task_types.is_none()),
        ]
        .into_iter()
        .filter_map(|(flag, absent)| absent.then_some(flag))
        .collect();
        if !missing.is_empty() {
            return Err(CommandError::MissingLimits {
                missing: missing.join(", "),
            });
        }
    }
    let mut p = proposed.clone();
    let r = &mut p.resources;
    r.cpu_percent_max = args.cpu_percent.unwrap_or(r.cpu_percent_max);
    r.ram_mb_max = args.ram_mb.unwrap_or(r.ram_mb_max);
    r.storage_gb_max = args.storage_gb.unwrap_or(r.storage_gb_max);
    r.bandwidth_mbps_max = args.bandwidth_mbps.unwrap_or(r.bandwidth_mbps_max);
    if let Some(types) = &args.task_types {
        p.tasks.allowlist = types.clone();
    }
    let errors = askee_core::validate::narrowing(&p, proposed, "");
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(CommandError::WiderLimits {
            wider: list.join("; "),
        });
    }
    Ok(p)
}

/// Prints, journals and saves a grant the coordinator accepted.
fn save_grant(
    home: &Home,
    state: &mut State,
    resp: GrantResponse,
    via: &str,
) -> Result<(), CommandError> {
    let token = resp.consent_token;
    // The grant id is shown as JSON (quoted), as it always has been.
    let grant_id = serde_json::Value::String(resp.grant_id);
    println!(
        "consent granted: token {} valid until {} (renewed under grant {grant_id})",
        token.payload.token_id, token.payload.expires_at
    );
    println!("revoke any time with `askee-agent revoke`");
    open_journal(home)?.append(
        "consent.grant",
        json!({
            "grant_id": grant_id,
            "token_id": token.payload.token_id,
            "expires_at": token.payload.expires_at,
            "limits": describe::limits(&token.payload.permissions),
            "via": via,
        }),
    )?;
    state.grant_id = grant_id.as_str().map(str::to_owned);
    state.revocation_certificate = Some(resp.revocation_certificate);
    state.token = Some(token);
    home.save(state)?;
    Ok(())
}

/// Asks `question` on the terminal; true only for an explicit `yes`.
fn confirm(question: &str) -> Result<bool, CommandError> {
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::NoTerminal);
    }
    print!("{question} Type 'yes' to grant: ");
    std::io::stdout().flush().map_err(CommandError::Terminal)?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CommandError::Terminal)?;
    Ok(line.trim() == "yes")
}
