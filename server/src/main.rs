//! `askee-server`: the control plane binary. A thin shell over the library:
//! it parses the command line, opens the store and runs one command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use askee_server::service::{audit, auth, consent};
use askee_server::{Clock, Config, Tls, keys, store};
use clap::{Parser, Subcommand};
use rand::RngCore as _;

mod demo;
mod task_cli;

/// askee control plane: consent engine, revocation, audit log.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Database URL: sqlite://FILE (embedded, the default) or postgres://…
    #[arg(
        long,
        env = "ASKEE_DATABASE_URL",
        default_value = "sqlite://askee.db",
        global = true
    )]
    database_url: String,
    /// PostgreSQL connections of this process (default: its CPUs plus one;
    /// raise it when the database runs on a larger machine).
    #[arg(long, env = "ASKEE_DB_POOL", global = true)]
    db_pool: Option<u32>,
    /// Directory holding the coordinator's signing keys (mode 0600).
    #[arg(long, env = "ASKEE_DATA_DIR", default_value = ".askee", global = true)]
    data_dir: PathBuf,
    /// Public base URL of this server, as volunteers reach it.
    #[arg(long, env = "ASKEE_PUBLIC_URL", global = true)]
    public_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "ASKEE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// PEM certificate chain: serve HTTPS with rustls.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Requests per second allowed per client address.
        #[arg(long, env = "ASKEE_RATE_PER_SECOND", default_value_t = 200.0)]
        rate_per_second: f64,
        /// Burst of requests allowed per client address.
        #[arg(long, env = "ASKEE_RATE_BURST", default_value_t = 400.0)]
        rate_burst: f64,
        /// Seconds between node heartbeats (three missed: offline).
        #[arg(long, env = "ASKEE_HEARTBEAT_SECONDS", default_value_t = 30)]
        heartbeat_seconds: u64,
        /// Seconds a replica is leased before it goes back to the pool.
        #[arg(long, env = "ASKEE_LEASE_SECONDS", default_value_t = 300)]
        lease_seconds: u64,
        /// Seconds between background crawls of the discovery queue
        /// (domains submitted through the API, re-checks after a record's
        /// TTL); 0 turns the background crawl off.
        #[arg(long, env = "ASKEE_CRAWL_EVERY", default_value_t = 60)]
        crawl_every: u64,
        #[command(flatten)]
        crawl: askee_server::cli::discovery::CrawlArgs,
        /// Serve this agent update repository (from `release init`)
        /// read-only under /tuf/metadata/ and /tuf/targets/.
        #[arg(long, env = "ASKEE_TUF_REPO")]
        tuf_repo: Option<PathBuf>,
    },
    /// Submit tasks and follow them.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Manage operator credentials.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Inspect the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the coordinator's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Crawl domains for opt-in participation signals (DNS TXT and
    /// well-known) and queue verified invitations.
    Discover(askee_server::cli::discovery::DiscoverArgs),
    /// Print the OpenAPI document (the content of openapi/openapi.json).
    Openapi,
    /// Run the whole system locally: this server on embedded SQLite, four
    /// local agents (one deliberately Byzantine) that consent and run the
    /// example tasks in their sandboxes; prints the verified results.
    Demo(demo::DemoArgs),
    /// Agent releases as a TUF update repository: keys, root ceremony,
    /// publishing, timestamp refresh.
    Release(askee_server::cli::release::ReleaseArgs),
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Create an operator and print its bearer credential (shown once).
    Create {
        /// Operator name, recorded in the audit log with every action.
        #[arg(long)]
        name: String,
        /// Also register this Ed25519 public key (base64url) for signing tasks.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Create an operator signing key file (0600) and print its public key.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Upload a module, sign and submit a task; with --wait, show progress
    /// until it is verified or fails (exit status 1 unless verified).
    Submit(Box<task_cli::SubmitArgs>),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every leaf and checkpoint; fail and name the entry on tampering.
    Verify,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Retire the active signing key and create a new one; old keys stay
    /// published until their tokens expire.
    Rotate,
}

fn config(cli: &Cli, listen: Option<SocketAddr>) -> Config {
    let public_url = cli.public_url.clone().unwrap_or_else(|| {
        let addr = listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        format!("http://{addr}")
    });
    Config::new(cli.data_dir.clone(), public_url)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Openapi => {
            print!("{}", askee_server::http::openapi_document());
        }
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            rate_per_second,
            rate_burst,
            heartbeat_seconds,
            lease_seconds,
            crawl_every,
            crawl,
            tuf_repo,
        } => {
            let store = store::open_with(&cli.database_url, cli.db_pool)
                .await
                .with_context(|| format!("opening {}", cli.database_url))?;
            let mut cfg = config(&cli, Some(*listen));
            cfg.rate_per_second = *rate_per_second;
            cfg.rate_burst = *rate_burst;
            cfg.heartbeat_interval = std::time::Duration::from_secs(*heartbeat_seconds);
            cfg.lease_duration = std::time::Duration::from_secs(*lease_seconds);
            cfg.tuf_repo = tuf_repo.clone();
            let state = askee_server::state(cfg, store, Clock::System)?;
            // Held for the server's lifetime: dropping it stops the crawl.
            let _crawl = if *crawl_every > 0 {
                let crawler = askee_server::service::discovery::Crawler::new(
                    state.clone(),
                    crawl.crawler_config()?,
                )?;
                Some(AbortOnDrop(tokio::spawn(
                    crawler.background(std::time::Duration::from_secs(*crawl_every)),
                )))
            } else {
                None
            };
            let tls = tls_cert
                .clone()
                .zip(tls_key.clone())
                .map(|(cert, key)| Tls { cert, key });
            askee_server::serve(state, *listen, tls).await?;
        }
        Command::Operator {
            command: OperatorCommand::Keygen { out },
        } => {
            let public = task_cli::keygen(out)?;
            println!("{public}");
        }
        Command::Task {
            command: TaskCommand::Submit(args),
        } => {
            let verified = task_cli::submit((**args).clone()).await?;
            if !verified {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Operator {
            command: OperatorCommand::Create { name, public_key },
        } => {
            let store = store::open_with(&cli.database_url, cli.db_pool).await?;
            let state = askee_server::state(config(&cli, None), store, Clock::System)?;
            let credential = new_operator(&state, name).await?;
            if let Some(public_key) = public_key {
                askee_core::b64::public_key(public_key)
                    .with_context(|| format!("--public-key {public_key:?}"))?;
                let audit = consent::draft(
                    &state,
                    "operator.key",
                    name,
                    serde_json::json!({"public_key": public_key}),
                );
                state
                    .store
                    .add_operator_key(name, public_key, state.clock.now(), audit)
                    .await?;
            }
            println!("{credential}");
            eprintln!("operator {name:?} created; the credential above is shown only once");
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let store = store::open_with(&cli.database_url, cli.db_pool).await?;
            let cfg = config(&cli, None);
            let keys = keys::load_or_create(&cfg.data_dir, 0, i64::MAX / 4)?;
            let (size, findings) =
                audit::verify_log(store.as_ref(), &keys, &cfg.log_origin()).await?;
            if findings.is_empty() {
                println!("audit log ok: {size} entries, every checkpoint consistent");
            } else {
                for f in &findings {
                    println!("{f}");
                }
                eprintln!(
                    "audit log verification failed: {} problem(s) in {size} entries",
                    findings.len()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Discover(args) => {
            let store = store::open_with(&cli.database_url, cli.db_pool).await?;
            let state = askee_server::state(config(&cli, None), store, Clock::System)?;
            let (summary, elapsed) = askee_server::cli::discovery::run(state, args).await?;
            if args.json {
                println!(
                    "{}",
                    askee_server::cli::discovery::to_json(&summary, elapsed)
                );
            } else {
                print!(
                    "{}",
                    askee_server::cli::discovery::render(&summary, elapsed)
                );
            }
        }
        Command::Demo(args) => {
            if !demo::run(args.clone()).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Release(args) => askee_server::cli::release::run(args).await?,
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let now = Clock::System.now();
            let kid = keys::rotate(&cli.data_dir, now)?;
            println!("new signing key {kid}; restart the servers to use it");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates an operator and returns its bearer credential (stored hashed).
async fn new_operator(state: &askee_server::AppState, name: &str) -> anyhow::Result<String> {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let credential = format!("askee_op_{}", askee_core::b64::encode(secret));
    let record = store::OperatorRecord {
        name: name.to_owned(),
        token_hash: auth::credential_hash(&credential),
        created_at: state.clock.now(),
    };
    let audit = consent::draft(
        state,
        "operator.create",
        name,
        serde_json::json!({"name": name}),
    );
    state.store.create_operator(&record, audit).await?;
    Ok(credential)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws progress bars and tells the story itself; its server
    // logs only errors unless ASKEE_LOG says otherwise.
    let default_filter = match cli.command {
        Command::Demo(_) => "error",
        _ => "info,sqlx=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ASKEE_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("start the tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Aborts a background task when the command that started it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
