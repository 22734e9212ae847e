//! `askee-agent`: the node agent. It manages the volunteer's identity and
//! consent, describes the machine (`profile`), shows and checks the local
//! audit journal (`audit`), and measures non-interference; the work loop
//! joins it with the coordinator issue.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use askee_agent::client::Coordinator;
use askee_agent::config::Config;
use askee_agent::home::{Home, State};
use askee_agent::journal::{self, JOURNAL_FILE, Journal};
use askee_agent::words;
use askee_core::signing::{self, manifest_digest};
use askee_core::wire::v1::{ConsentToken, GRANT_STATEMENT_VERSION, GrantStatement, Permissions};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

/// Exit status of `update check` when a release is available.
const EXIT_UPDATE_AVAILABLE: u8 = 10;

/// askee node agent: lend this computer's idle time, on your terms.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory for the node key and consent state.
    #[arg(long, env = "ASKEE_AGENT_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this node's Ed25519 identity key (stored with mode 0600).
    Init,
    /// Opt in directly with a coordinator and fetch its capability manifest.
    Join {
        /// Coordinator base URL (https, or http to loopback only).
        coordinator: String,
    },
    /// Review or grant consent.
    Consent {
        #[command(subcommand)]
        command: ConsentCommand,
    },
    /// Show the consent token, its limits and its state at the coordinator.
    Status,
    /// Opt in to discovery: print the DNS TXT record, write the well-known
    /// document and draw the QR code, all signed with the node key.
    Signal(askee_agent::signal::SignalArgs),
    /// Withdraw consent now.
    Revoke {
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "revoked by the volunteer")]
        reason: String,
    },
    /// Run the agent: register with the coordinator, take work while the
    /// machine is idle and consent holds, run it in the sandbox, and stop
    /// everything at once on revocation or expiry.
    Run(RunArgs),
    /// Describe this machine as the coordinator would see it (JSON on stdout,
    /// plain words on stderr).
    Profile,
    /// Show the local audit journal in plain words.
    Audit {
        #[command(subcommand)]
        command: Option<AuditCommand>,
    },
    /// Measure whether running tasks slows this computer down: each
    /// measurement alone, then again beside CPU-, memory- and cache-heavy
    /// tasks in the real sandbox.
    ValidateNonInterference(askee_agent::interference::Options),
    /// Signed self-update from the release repository (TUF).
    Update {
        #[command(subcommand)]
        command: UpdateCommand,
    },
    /// Check that this binary works: print its version and the sandbox
    /// probe as JSON (the updater runs it on a new binary before keeping it).
    SelfCheck,
    /// Run one non-interference probe in this process and print its figure
    /// (`validate-non-interference` runs each probe this way, in its own
    /// process, as the volunteer's programs run).
    #[command(hide = true)]
    Probe {
        kind: askee_agent::interference::ProbeKind,
        /// How long the probe runs.
        #[arg(long)]
        seconds: f64,
        /// Directory for the fsync probe's file.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run only the idle monitor, printing each change (for measuring its
    /// own overhead).
    #[command(hide = true)]
    Monitor {
        /// Stop after this many seconds (0 = run until interrupted).
        #[arg(long, default_value_t = 0)]
        for_secs: u64,
    },
}

#[derive(Subcommand)]
enum UpdateCommand {
    /// Verify the release repository and say whether a newer release
    /// exists (exit status 0: up to date, 10: available, 1: refused).
    Check(UpdateArgs),
    /// Check, download, verify, install and self-check a newer release
    /// (refused while `run` holds this home; the daemon updates itself).
    Apply(UpdateArgs),
    /// Show the installed, pending and refused releases.
    Status,
    /// Turn updates on: copy the repository's trusted root into the home
    /// (`update-root.json`) and write the `[update]` settings to
    /// config.toml (the installer's `--update-repo` / `--trusted-root`).
    Configure {
        /// Release repository base URL, e.g. https://coordinator.example/tuf.
        #[arg(long)]
        repository: String,
        /// The repository's root metadata (`metadata/1.root.json` from
        /// `askee-server release init`), obtained out of band.
        #[arg(long)]
        trusted_root: PathBuf,
    },
}

#[derive(Args)]
struct UpdateArgs {
    /// Release repository base URL (default: update.repository in config.toml).
    #[arg(long)]
    repository: Option<String>,
    /// Trusted root metadata (default: update.trusted_root in config.toml).
    #[arg(long)]
    trusted_root: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the journal's hash chain; fails naming the first broken line.
    Verify,
}

/// When work may run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum When {
    /// Only while the machine is idle (the seed's thresholds, see config.toml).
    Idle,
    /// Whenever consent holds, even while the machine is in use (for
    /// dedicated machines; tasks still run at the lowest priority).
    Always,
}

#[derive(Args)]
struct RunArgs {
    /// When tasks may run.
    #[arg(long, value_enum, default_value_t = When::Idle)]
    when: When,
    /// Tasks run at the same time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: u32,
    /// Only run tasks signed by this operator key (base64url); repeatable.
    /// Without it, any operator the coordinator registered is accepted.
    #[arg(long = "trust-operator")]
    trust_operator: Vec<String>,
    /// DEMO AND TEST ONLY: behave as a Byzantine node by corrupting every
    /// completed result (stdout altered before it is digested and signed),
    /// so the coordinator's quorum and exclusion can be watched at work.
    /// Hidden from help; announced loudly at start and journalled.
    #[arg(long, hide = true)]
    byzantine_corrupt_results: bool,
}

#[derive(Subcommand)]
enum ConsentCommand {
    /// Show what the coordinator asks for, in plain words.
    Review,
    /// Grant consent, signed with the node key. Asks for confirmation; a
    /// scripted install passes --yes and must then give every limit.
    Grant(GrantArgs),
    /// Review and choose your limits in the browser: prints a one-time link
    /// to the coordinator's consent portal, then signs what you choose there
    /// with the node key (the page alone cannot grant). After a grant, the
    /// link opens your status page (tokens, usage, tasks, audit, revoke).
    Portal,
}

#[derive(Args)]
struct GrantArgs {
    /// Highest share of the CPU, in percent.
    #[arg(long)]
    cpu_percent: Option<u32>,
    /// Highest memory, in MiB.
    #[arg(long)]
    ram_mb: Option<u64>,
    /// Highest scratch disk, in GiB.
    #[arg(long)]
    storage_gb: Option<u64>,
    /// Highest network bandwidth, in Mbit/s.
    #[arg(long)]
    bandwidth_mbps: Option<u64>,
    /// Task types allowed, comma-separated.
    #[arg(long, value_delimiter = ',')]
    task_types: Option<Vec<String>>,
    /// Days until the consent ends (at most what the manifest offers).
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Grant without the interactive question (every limit flag is then required).
    #[arg(long)]
    yes: bool,
}

fn home(cli: &Cli) -> anyhow::Result<Home> {
    if let Some(h) = &cli.home {
        return Ok(Home::new(h.clone()));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("set --home or HOME")?;
    Ok(Home::new(base.join("askee")))
}

fn journal(home: &Home) -> anyhow::Result<Journal> {
    std::fs::create_dir_all(home.dir())
        .with_context(|| format!("create {}", home.dir().display()))?;
    Ok(Journal::open(&journal_path(home))?)
}

fn journal_path(home: &Home) -> PathBuf {
    home.dir().join(JOURNAL_FILE)
}

fn coordinator(home: &Home, state: &State) -> anyhow::Result<Coordinator> {
    let url = state
        .coordinator
        .as_deref()
        .context("not joined to a coordinator; run `askee-agent join <url>`")?;
    Ok(Coordinator::new(url, home.key()?)?)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn chosen(args: &GrantArgs, proposed: &Permissions) -> anyhow::Result<Permissions> {
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
            bail!(
                "--yes grants without asking, so every limit must be given explicitly; missing: {}",
                missing.join(", ")
            );
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
        bail!(
            "these limits are wider than the coordinator proposed: {}",
            list.join("; ")
        );
    }
    Ok(p)
}

/// Prints, journals and saves a grant the coordinator accepted.
fn save_grant(home: &Home, state: &mut State, resp: &Value, via: &str) -> anyhow::Result<()> {
    let token: ConsentToken = serde_json::from_value(resp["consent_token"].clone())?;
    println!(
        "consent granted: token {} valid until {} (renewed under grant {})",
        token.payload.token_id, token.payload.expires_at, resp["grant_id"]
    );
    println!("revoke any time with `askee-agent revoke`");
    journal(home)?.append(
        "consent.grant",
        json!({
            "grant_id": resp["grant_id"],
            "token_id": token.payload.token_id,
            "expires_at": token.payload.expires_at,
            "limits": words::limits(&token.payload.permissions),
            "via": via,
        }),
    )?;
    state.grant_id = resp["grant_id"].as_str().map(str::to_owned);
    state.revocation_certificate = Some(serde_json::from_value(
        resp["revocation_certificate"].clone(),
    )?);
    state.token = Some(token);
    home.save(state)?;
    Ok(())
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "consent needs an explicit answer: run in a terminal, or pass --yes with every limit"
        );
    }
    print!("{question} Type 'yes' to grant: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = home(&cli)?;
    match &cli.command {
        Command::Init => {
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
        }
        Command::Join { coordinator } => {
            let client = Coordinator::new(coordinator, home.key()?)?;
            let resp: Value = client
                .signed_post(
                    "/v1/invitations",
                    &json!({ "node_public_key": client.node_id() }),
                )
                .await?;
            let manifest: askee_core::wire::v1::CapabilityManifest =
                serde_json::from_value(resp["manifest"].clone())?;
            let digest = resp["manifest_digest"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            // What is shown must be what gets signed: check the digest here.
            if manifest_digest(&manifest) != digest {
                bail!("the coordinator's manifest digest does not match its manifest; refusing");
            }
            print!("{}", words::manifest(&manifest));
            println!("\nTo accept, run `askee-agent consent grant`.");
            let mut state = home.state()?;
            state.coordinator = Some(coordinator.trim_end_matches('/').to_owned());
            journal(&home)?.append(
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
        }
        Command::Consent {
            command: ConsentCommand::Review,
        } => {
            let state = home.state()?;
            let m = state
                .manifest
                .context("no manifest yet; run `askee-agent join <url>`")?;
            print!("{}", words::manifest(&m));
        }
        Command::Consent {
            command: ConsentCommand::Grant(args),
        } => {
            let mut state = home.state()?;
            let client = coordinator(&home, &state)?;
            let m = state
                .manifest
                .clone()
                .context("no manifest yet; run `askee-agent join <url>`")?;
            let permissions = chosen(args, &m.proposed)?;
            let ends = (now() + args.days * 86_400).min(m.grant_expires_at_max);
            if !args.yes {
                print!("{}", words::manifest(&m));
                let question = format!("\nYou are granting: {}.", words::limits(&permissions));
                if !confirm(&question)? {
                    bail!("consent not granted");
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
            let resp: Value = client.post("/v1/grants", &signed).await?;
            save_grant(&home, &mut state, &resp, "cli")?;
        }
        Command::Consent {
            command: ConsentCommand::Portal,
        } => {
            let mut state = home.state()?;
            let client = coordinator(&home, &state)?;
            // A manifest still pending is reviewed and granted in the page;
            // otherwise the link opens the status page only.
            let mut pending = None;
            if let Some(m) = state.manifest.clone() {
                let at: Value = client
                    .get(&format!("/v1/manifests/{}", m.manifest_id))
                    .await?;
                if at["state"].as_str() == Some("pending") {
                    pending = Some(m);
                }
            }
            let pairing = askee_agent::portal::pair(
                &client,
                pending.as_ref().map(|m| m.manifest_id.as_str()),
            )
            .await?;
            println!(
                "Open this link in your browser (keep it private: it shows your status and can revoke):"
            );
            println!("{}", pairing.url);
            let Some(m) = pending else {
                println!(
                    "nothing is waiting for consent; the link shows your status and lets you revoke"
                );
                return Ok(());
            };
            println!("waiting for your choice in the page…");
            std::io::stdout().flush()?;
            let choice = askee_agent::portal::wait_for_choice(&client, &pairing, &m, now).await?;
            println!(
                "You chose in the portal: {}; until {} (unix time).",
                words::limits(&choice.permissions),
                choice.grant_expires_at
            );
            println!("signing the grant with this node's key…");
            let resp = askee_agent::portal::sign_and_submit(
                &client,
                &home.key()?,
                &pairing,
                &m,
                &choice,
                now(),
            )
            .await?;
            save_grant(&home, &mut state, &resp, "portal")?;
        }
        Command::Status => {
            let state = home.state()?;
            let Some(token) = &state.token else {
                println!("no consent granted");
                return Ok(());
            };
            let client = coordinator(&home, &state)?;
            let status: Value = client
                .get(&format!("/revoke/{}", token.payload.token_id))
                .await?;
            println!(
                "token {}: {}",
                token.payload.token_id,
                status["status"].as_str().unwrap_or("unknown")
            );
            println!("limits: {}", words::limits(&token.payload.permissions));
            println!("expires at {} (unix time)", token.payload.expires_at);
            let run_status = home.dir().join("run-status.json");
            match std::fs::read(&run_status)
                .ok()
                .and_then(|b| serde_json::from_slice::<askee_agent::runner::RunStatus>(&b).ok())
            {
                Some(r) => {
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
                None => println!("the agent is not running (start it with `askee-agent run`)"),
            }
        }
        Command::Revoke { reason } => {
            let state = home.state()?;
            let token = state.token.as_ref().context("no consent to revoke")?;
            let client = coordinator(&home, &state)?;
            let status: Value = client
                .signed_post(
                    &format!("/v1/tokens/{}/revoke", token.payload.token_id),
                    &json!({ "reason": reason }),
                )
                .await?;
            journal(&home)?.append(
                "consent.revoke",
                json!({ "token_id": token.payload.token_id, "reason": reason }),
            )?;
            println!(
                "consent revoked: token {} is {}",
                token.payload.token_id,
                status["status"].as_str().unwrap_or("?")
            );
        }
        Command::Profile => {
            let profile = askee_agent::profile::assess(home.dir())?;
            println!("{}", serde_json::to_string_pretty(&profile)?);
            eprint!("{}", askee_agent::profile::words(&profile));
        }
        Command::Audit { command: None } => {
            let entries = journal::read_if_any(&journal_path(&home))?;
            if entries.is_empty() {
                println!("the journal is empty");
            }
            for e in &entries {
                println!("{}", words::journal_entry(e));
            }
        }
        Command::Audit {
            command: Some(AuditCommand::Verify),
        } => {
            let path = journal_path(&home);
            let entries = journal::read_if_any(&path)?;
            let findings = journal::verify(&entries);
            if let Some(first) = findings.first() {
                for f in &findings {
                    eprintln!("{}: {}", path.display(), words::finding(f));
                }
                bail!("the journal was tampered with at line {}", first.line());
            }
            println!(
                "{}: {} entries, chain intact",
                path.display(),
                entries.len()
            );
        }
        Command::ValidateNonInterference(opts) => {
            let report = askee_agent::interference::validate(home.dir(), opts).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprint!("{}", report.words());
            if !report.passed() {
                std::process::exit(2);
            }
        }
        Command::Probe { kind, seconds, dir } => {
            let d = std::time::Duration::from_secs_f64(seconds.max(0.0));
            let figure = askee_agent::interference::run_probe(*kind, d, dir)?;
            println!("{figure}");
        }
        Command::Monitor { for_secs } => monitor(&home, *for_secs).await?,
        Command::SelfCheck => self_check()?,
        Command::Update {
            command: UpdateCommand::Status,
        } => {
            let state = askee_agent::update::UpdateState::load(home.dir())?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        Command::Update {
            command:
                UpdateCommand::Configure {
                    repository,
                    trusted_root,
                },
        } => configure_updates(home.dir(), repository, trusted_root)?,
        Command::Update {
            command: UpdateCommand::Check(args),
        } => {
            let updater = updater(&home, args)?;
            let (found, _) = updater.check().await?;
            match found {
                askee_agent::update::Check::UpToDate { current } => {
                    println!("up to date: {current}");
                }
                askee_agent::update::Check::Available { current, release } => {
                    println!(
                        "release {} available ({}); running {current}",
                        release.version, release.name
                    );
                    std::process::exit(EXIT_UPDATE_AVAILABLE.into());
                }
            }
        }
        Command::Update {
            command: UpdateCommand::Apply(args),
        } => {
            let updater = updater(&home, args)?;
            match updater.apply().await? {
                askee_agent::update::Applied::UpToDate { current } => {
                    println!("up to date: {current}");
                }
                askee_agent::update::Applied::Installed { release, sha256 } => {
                    println!(
                        "installed {} ({} and {}, agent sha256 {sha256}) as {}; the previous version is kept; \
                         restart the agent to run it",
                        release.version,
                        release.name,
                        release.worker_name(),
                        updater.settings().layout.binary().display()
                    );
                }
            }
        }
        Command::Run(args) => daemon(home, args).await?,
        Command::Signal(args) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            print!("{}", askee_agent::signal::run(&home.key()?, args, now)?);
        }
    }
    Ok(())
}

fn update_settings(
    home: &std::path::Path,
    config: &Config,
    args: Option<&UpdateArgs>,
) -> anyhow::Result<askee_agent::update::Settings> {
    use askee_agent::update::UpdateError;
    let repository = args
        .and_then(|a| a.repository.clone())
        .or_else(|| config.update.repository.clone())
        .ok_or(UpdateError::NoRepository)?;
    let trusted_root = args
        .and_then(|a| a.trusted_root.clone())
        .or_else(|| config.update.trusted_root.clone())
        .ok_or(UpdateError::NoTrustedRoot)?;
    // A relative root is relative to the home.
    let trusted_root = home.join(trusted_root);
    Ok(askee_agent::update::Settings {
        repository,
        trusted_root,
        layout: askee_agent::update::Layout::of_running()?,
        platform: askee_core::release::host_platform(),
    })
}

/// The trusted root's file name in the home.
const TRUSTED_ROOT_FILE: &str = "update-root.json";

/// `update configure`.
fn configure_updates(
    home: &std::path::Path,
    repository: &str,
    trusted_root: &std::path::Path,
) -> anyhow::Result<()> {
    let url = url::Url::parse(repository)
        .with_context(|| format!("--repository {repository:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--repository must be an http(s) URL, got {repository:?}");
    }
    let bytes = std::fs::read(trusted_root)
        .with_context(|| format!("read the trusted root {}", trusted_root.display()))?;
    let root: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", trusted_root.display()))?;
    if root["signed"]["_type"] != "root" || !root["signed"]["version"].is_u64() {
        bail!(
            "{} is not TUF root metadata (signed._type \"root\" with a version)",
            trusted_root.display()
        );
    }
    std::fs::create_dir_all(home).with_context(|| format!("create {}", home.display()))?;
    // Idempotent: files are rewritten only when they change.
    let dest = home.join(TRUSTED_ROOT_FILE);
    if std::fs::read(&dest).ok().as_deref() != Some(&bytes[..]) {
        let tmp = home.join(format!(".{TRUSTED_ROOT_FILE}.tmp"));
        std::fs::write(&tmp, &bytes).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &dest).with_context(|| format!("write {}", dest.display()))?;
    }
    let mut config = Config::load(home)?;
    let before = config.clone();
    config.update.repository = Some(repository.to_owned());
    config.update.trusted_root = Some(PathBuf::from(TRUSTED_ROOT_FILE));
    if config != before || !Config::path(home).exists() {
        config.save(home)?;
    }
    println!(
        "updates on: {repository}, trusted root version {} in {}, checked every {} s",
        root["signed"]["version"],
        dest.display(),
        config.update.check_interval_secs
    );
    Ok(())
}

fn updater(home: &Home, args: &UpdateArgs) -> anyhow::Result<askee_agent::update::Updater> {
    let config = Config::load(home.dir())?;
    let settings = update_settings(home.dir(), &config, Some(args))?;
    let journal = std::sync::Arc::new(journal(home)?);
    Ok(askee_agent::update::Updater::new(
        home.dir(),
        settings,
        journal,
    ))
}

/// `self-check`: this binary runs, knows its version and can probe the
/// sandbox; the worker beside it runs and speaks this agent's protocol
/// version.
fn self_check() -> anyhow::Result<()> {
    let worker = askee_agent::interference::default_worker();
    let probe = askee_sandbox::probe();
    let expected = askee_sandbox::proto::PROTOCOL_VERSION;
    let answer = worker_protocol(&worker);
    let ok = answer.as_ref().is_ok_and(|v| *v == expected);
    println!(
        "{}",
        json!({
            "ok": ok,
            "version": env!("CARGO_PKG_VERSION"),
            "platform": askee_core::release::host_platform(),
            "worker": worker,
            "worker_present": worker.exists(),
            "worker_protocol": answer.as_ref().ok(),
            "protocol": expected,
            "sandbox": probe,
        })
    );
    match answer {
        Err(e) => bail!(
            "the sandbox worker {} does not answer: {e}",
            worker.display()
        ),
        Ok(v) if v != expected => bail!(
            "the sandbox worker {} speaks protocol {v}, this agent {expected}",
            worker.display()
        ),
        Ok(_) => Ok(()),
    }
}

/// Asks `worker --protocol-version` (the caller's own time limit bounds it).
fn worker_protocol(worker: &std::path::Path) -> anyhow::Result<u32> {
    let out = std::process::Command::new(worker)
        .arg(askee_sandbox::proto::PROTOCOL_VERSION_FLAG)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("run {}", worker.display()))?;
    if !out.status.success() {
        bail!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("answered {:?}, not a protocol version", text.trim()))
}

async fn daemon(home: Home, args: &RunArgs) -> anyhow::Result<()> {
    use askee_agent::activity::Activity;
    use askee_agent::exec::{Executor, Registry};
    use askee_agent::runner::{RunOptions, Runner};
    use askee_agent::update::{self, StartVerdict};
    use askee_agent::yielder::TaskSet;

    // Captured before anything can switch the installed version.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let binary = update::current_binary()?;
    // Outside a versioned layout (a development build) nothing is updated.
    let layout = update::Layout::of_binary(&binary).ok();
    let home_dir = home.dir().to_owned();
    std::fs::create_dir_all(home.dir())
        .with_context(|| format!("create {}", home.dir().display()))?;
    let _lock = update::DaemonLock::acquire(home.dir())?;
    let config = Config::load(home.dir())?;
    let journal = std::sync::Arc::new(askee_agent::journal::Journal::open(
        &home.dir().join(askee_agent::journal::JOURNAL_FILE),
    )?);
    if update::on_start(home.dir(), layout.as_ref(), &journal)? == StartVerdict::RolledBack
        && let Some(layout) = &layout
    {
        drop(_lock);
        return Err(update::restart(&layout.binary(), &argv).into());
    }
    let profile = askee_agent::profile::assess(home.dir())?;
    let tasks = TaskSet::new();
    // With `--when always` the verdict never changes; its sender lives as
    // long as the daemon.
    let (_always, always_rx) = tokio::sync::watch::channel(Activity::Idle);
    let activity = match args.when {
        When::Always => always_rx,
        When::Idle => {
            let mut sensors = askee_agent::idle::Sensors::host(tasks.clone())?;
            sensors.exclusive = config.exclusive_programs.clone();
            askee_agent::idle::IdleMonitor {
                sensors,
                thresholds: config.idle.clone(),
                interval: std::time::Duration::from_millis(config.sample_interval_ms.max(10)),
            }
            .spawn()
        }
    };
    askee_agent::yielder::spawn(activity.clone(), tasks.clone(), journal.clone());
    let sandbox = askee_sandbox::Sandbox::new(askee_sandbox::SandboxConfig {
        worker: askee_agent::interference::default_worker(),
        work_dir: home.dir().join("sandbox"),
        spare_worker: true,
    })?;
    let exec = Executor::new(sandbox, config.scratch(home.dir()), Registry::new(tasks));
    let runner = Runner::new(
        home,
        journal.clone(),
        exec,
        profile.clone(),
        activity,
        RunOptions {
            parallel: args.parallel as usize,
            allowed_operators: args.trust_operator.clone(),
            cores: profile.cpu.cores,
            byzantine_corrupt_results: args.byzantine_corrupt_results,
        },
    )?;
    update::confirm(&home_dir, layout.as_ref(), &journal)?;
    let updates_on = config.update.repository.is_some() && config.update.check_interval_secs > 0;
    if updates_on && layout.is_none() {
        tracing::warn!(
            binary = %binary.display(),
            "updates are configured but this agent is not installed in a versioned layout; not checking"
        );
    }
    let _updates = if updates_on && layout.is_some() {
        let settings = update_settings(&home_dir, &config, None)?;
        let updater = update::Updater::new(&home_dir, settings, journal.clone());
        let (slots, count) = runner.slots();
        Some(AbortOnDrop(tokio::spawn(update::schedule(
            updater,
            std::time::Duration::from_secs(config.update.check_interval_secs),
            slots,
            count,
            argv,
        ))))
    } else {
        None
    };
    eprintln!(
        "askee-agent running (pid {}); stop with ctrl-c or `askee-agent revoke`",
        std::process::id()
    );
    runner.run(shutdown_signal()).await;
    Ok(())
}

/// Aborts a background task when the daemon ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn monitor(home: &Home, for_secs: u64) -> anyhow::Result<()> {
    let config = Config::load(home.dir())?;
    let mut sensors = askee_agent::idle::Sensors::host(askee_agent::yielder::TaskSet::new())?;
    sensors.exclusive = config.exclusive_programs.clone();
    eprintln!("input source: {}", sensors.input.kind());
    let mut rx = askee_agent::idle::IdleMonitor {
        sensors,
        thresholds: config.idle.clone(),
        interval: std::time::Duration::from_millis(config.sample_interval_ms.max(10)),
    }
    .spawn();
    let stop = async {
        if for_secs == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(std::time::Duration::from_secs(for_secs)).await
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ASKEE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
