//! One function per `askee-agent` subcommand. The binary parses the command
//! line and calls exactly one of these; what they print is the CLI's output.

use std::path::{Path, PathBuf};

use crate::client::{ClientError, Coordinator};
use crate::home::{Home, HomeError, State};
use crate::journal::{JOURNAL_FILE, Journal, JournalError};

pub mod audit;
pub mod consent;
pub mod daemon;
pub mod machine;
pub mod self_check;
pub mod signal;
pub mod status;
pub mod update;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("set --home or HOME")]
    NoHome,
    #[error("create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not joined to a coordinator; run `askee-agent join <url>`")]
    NotJoined,
    #[error("no manifest yet; run `askee-agent join <url>`")]
    NoManifest,
    #[error("the coordinator's manifest digest does not match its manifest; refusing")]
    ManifestDigest,
    #[error(
        "--yes grants without asking, so every limit must be given explicitly; missing: {missing}"
    )]
    MissingLimits { missing: String },
    #[error("these limits are wider than the coordinator proposed: {wider}")]
    WiderLimits { wider: String },
    #[error("consent needs an explicit answer: run in a terminal, or pass --yes with every limit")]
    NoTerminal,
    #[error("consent not granted")]
    NotGranted,
    #[error("no consent to revoke")]
    NoConsent,
    #[error("the journal was tampered with at line {line}")]
    Tampered { line: u64 },
    #[error("--repository {repository:?} is not a URL")]
    RepositoryUrl {
        repository: String,
        #[source]
        source: url::ParseError,
    },
    #[error("--repository must be an http(s) URL, got {repository:?}")]
    RepositoryScheme { repository: String },
    #[error("read the trusted root {path}")]
    ReadTrustedRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON")]
    TrustedRootJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not TUF root metadata (signed._type \"root\" with a version)")]
    NotTufRoot { path: PathBuf },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox worker {worker} does not answer: {reason}")]
    WorkerSilent { worker: PathBuf, reason: String },
    #[error("the sandbox worker {worker} speaks protocol {spoken}, this agent {expected}")]
    WorkerProtocol {
        worker: PathBuf,
        spoken: u32,
        expected: u32,
    },
    /// Reading the volunteer's answer or writing the prompt failed.
    #[error(transparent)]
    Terminal(std::io::Error),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Portal(#[from] crate::portal::PortalError),
    #[error(transparent)]
    Update(#[from] crate::update::UpdateError),
    #[error(transparent)]
    Run(#[from] crate::runner::RunError),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error(transparent)]
    Interference(#[from] crate::interference::InterferenceError),
    #[error(transparent)]
    Idle(#[from] crate::idle::SourceError),
    #[error(transparent)]
    Sandbox(#[from] askee_sandbox::SandboxError),
    #[error(transparent)]
    Signal(#[from] crate::signal::SignalCommandError),
}

/// The agent's home: `--home` (or `ASKEE_AGENT_HOME`), else
/// `$XDG_CONFIG_HOME/askee`, else `$HOME/.config/askee`.
pub fn resolve_home(given: Option<PathBuf>) -> Result<Home, CommandError> {
    if let Some(h) = given {
        return Ok(Home::new(h));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or(CommandError::NoHome)?;
    Ok(Home::new(base.join("askee")))
}

/// Creates `dir` and its parents.
fn create_dir(dir: &Path) -> Result<(), CommandError> {
    std::fs::create_dir_all(dir).map_err(|source| CommandError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Opens the local journal, creating the home if needed.
fn open_journal(home: &Home) -> Result<Journal, CommandError> {
    create_dir(home.dir())?;
    Ok(Journal::open(&journal_path(home))?)
}

fn journal_path(home: &Home) -> PathBuf {
    home.dir().join(JOURNAL_FILE)
}

/// The client for the coordinator this node joined.
fn coordinator(home: &Home, state: &State) -> Result<Coordinator, CommandError> {
    let url = state
        .coordinator
        .as_deref()
        .ok_or(CommandError::NotJoined)?;
    Ok(Coordinator::new(url, home.key()?)?)
}
