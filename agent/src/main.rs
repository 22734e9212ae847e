//! `askee-agent`: the node agent's command line. It parses the arguments and
//! calls one function of `askee_agent::commands` per subcommand; what each
//! does is documented there.

use std::path::PathBuf;
use std::process::ExitCode;

use askee_agent::commands::{
    self, audit, consent, daemon, machine, self_check, signal, status, update,
};
use clap::{Parser, Subcommand};

/// Exit status of `update check` when a release is available.
const EXIT_UPDATE_AVAILABLE: u8 = 10;
/// Exit status of `validate-non-interference` when the machine is slowed down.
const EXIT_INTERFERENCE: u8 = 2;

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
    Run(daemon::RunArgs),
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
    Check(update::UpdateArgs),
    /// Check, download, verify, install and self-check a newer release
    /// (refused while `run` holds this home; the daemon updates itself).
    Apply(update::UpdateArgs),
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the journal's hash chain; fails naming the first broken line.
    Verify,
}

#[derive(Subcommand)]
enum ConsentCommand {
    /// Show what the coordinator asks for, in plain words.
    Review,
    /// Grant consent, signed with the node key. Asks for confirmation; a
    /// scripted install passes --yes and must then give every limit.
    Grant(consent::GrantArgs),
    /// Review and choose your limits in the browser: prints a one-time link
    /// to the coordinator's consent portal, then signs what you choose there
    /// with the node key (the page alone cannot grant). After a grant, the
    /// link opens your status page (tokens, usage, tasks, audit, revoke).
    Portal,
}

/// Exit with `code` when `failed`, else success.
fn exit_if(failed: bool, code: u8) -> ExitCode {
    if failed {
        ExitCode::from(code)
    } else {
        ExitCode::SUCCESS
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let home = commands::resolve_home(cli.home)?;
    match cli.command {
        Command::Init => consent::init(&home)?,
        Command::Join { coordinator } => consent::join(&home, &coordinator).await?,
        Command::Consent { command } => match command {
            ConsentCommand::Review => consent::review(&home)?,
            ConsentCommand::Grant(args) => consent::grant(&home, &args).await?,
            ConsentCommand::Portal => consent::portal(&home).await?,
        },
        Command::Status => status::status(&home).await?,
        Command::Revoke { reason } => status::revoke(&home, &reason).await?,
        Command::Signal(args) => signal::signal(&home, &args)?,
        Command::Run(args) => daemon::run(home, &args).await?,
        Command::Profile => machine::profile(&home)?,
        Command::Audit { command: None } => audit::show(&home)?,
        Command::Audit {
            command: Some(AuditCommand::Verify),
        } => audit::verify(&home)?,
        Command::ValidateNonInterference(opts) => {
            let passed = machine::validate_non_interference(&home, &opts).await?;
            return Ok(exit_if(!passed, EXIT_INTERFERENCE));
        }
        Command::Probe { kind, seconds, dir } => machine::probe(kind, seconds, &dir)?,
        Command::Monitor { for_secs } => machine::monitor(&home, for_secs).await?,
        Command::SelfCheck => self_check::self_check()?,
        Command::Update { command } => match command {
            UpdateCommand::Check(args) => {
                let available = update::check(&home, &args).await?;
                return Ok(exit_if(available, EXIT_UPDATE_AVAILABLE));
            }
            UpdateCommand::Apply(args) => update::apply(&home, &args).await?,
            UpdateCommand::Status => update::status(&home)?,
            UpdateCommand::Configure {
                repository,
                trusted_root,
            } => update::configure(home.dir(), &repository, &trusted_root)?,
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ASKEE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
