//! `update check|apply|status|configure`: the signed self-update, by hand.
//! The daemon's own scheduled update is in [`crate::update::schedule`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CommandError, create_dir, open_journal};
use crate::config::Config;
use crate::home::Home;
use crate::update::{Applied, Check, Layout, Settings, UpdateError, UpdateState, Updater};

/// The trusted root's file name in the home.
const TRUSTED_ROOT_FILE: &str = "update-root.json";

/// Where to update from, when not from config.toml.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdateArgs {
    /// Release repository base URL (default: update.repository in config.toml).
    #[arg(long)]
    pub repository: Option<String>,
    /// Trusted root metadata (default: update.trusted_root in config.toml).
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
}

/// `update check`: answers whether a newer release is available.
pub async fn check(home: &Home, args: &UpdateArgs) -> Result<bool, CommandError> {
    let updater = updater(home, args)?;
    let (found, _) = updater.check().await?;
    Ok(match found {
        Check::UpToDate { current } => {
            println!("up to date: {current}");
            false
        }
        Check::Available { current, release } => {
            println!(
                "release {} available ({}); running {current}",
                release.version, release.name
            );
            true
        }
    })
}

/// `update apply`: check, download, verify, install and self-check.
pub async fn apply(home: &Home, args: &UpdateArgs) -> Result<(), CommandError> {
    let updater = updater(home, args)?;
    match updater.apply().await? {
        Applied::UpToDate { current } => {
            println!("up to date: {current}");
        }
        Applied::Installed { release, sha256 } => {
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
    Ok(())
}

/// `update status`: the installed, pending and refused releases as JSON.
pub fn status(home: &Home) -> Result<(), CommandError> {
    let state = UpdateState::load(home.dir())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&state).expect("the update state serialises")
    );
    Ok(())
}

/// `update configure`: copies the trusted root into the home and writes the
/// `[update]` settings (idempotent: files are rewritten only when they change).
pub fn configure(home: &Path, repository: &str, trusted_root: &Path) -> Result<(), CommandError> {
    let url = url::Url::parse(repository).map_err(|source| CommandError::RepositoryUrl {
        repository: repository.to_owned(),
        source,
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CommandError::RepositoryScheme {
            repository: repository.to_owned(),
        });
    }
    let bytes = std::fs::read(trusted_root).map_err(|source| CommandError::ReadTrustedRoot {
        path: trusted_root.to_owned(),
        source,
    })?;
    let root_version = tuf_root_version(&bytes, trusted_root)?;
    create_dir(home)?;
    let dest = home.join(TRUSTED_ROOT_FILE);
    if std::fs::read(&dest).ok().as_deref() != Some(&bytes[..]) {
        crate::private_file::write_shared(&dest, &bytes).map_err(|source| CommandError::Write {
            path: dest.clone(),
            source,
        })?;
    }
    let mut config = Config::load(home)?;
    let before = config.clone();
    config.update.repository = Some(repository.to_owned());
    config.update.trusted_root = Some(PathBuf::from(TRUSTED_ROOT_FILE));
    if config != before || !Config::path(home).exists() {
        config.save(home)?;
    }
    println!(
        "updates on: {repository}, trusted root version {root_version} in {}, checked every {} s",
        dest.display(),
        config.update.check_interval_secs
    );
    Ok(())
}

/// The version of TUF root metadata, refusing anything else.
fn tuf_root_version(bytes: &[u8], path: &Path) -> Result<u64, CommandError> {
    let root: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| CommandError::TrustedRootJson {
            path: path.to_owned(),
            source,
        })?;
    match (
        root["signed"]["_type"].as_str(),
        root["signed"]["version"].as_u64(),
    ) {
        (Some("root"), Some(version)) => Ok(version),
        _ => Err(CommandError::NotTufRoot {
            path: path.to_owned(),
        }),
    }
}

/// The update settings: the flags, else config.toml (a relative trusted
/// root is relative to the home).
pub(crate) fn settings(
    home: &Path,
    config: &Config,
    args: Option<&UpdateArgs>,
) -> Result<Settings, UpdateError> {
    let repository = args
        .and_then(|a| a.repository.clone())
        .or_else(|| config.update.repository.clone())
        .ok_or(UpdateError::NoRepository)?;
    let trusted_root = args
        .and_then(|a| a.trusted_root.clone())
        .or_else(|| config.update.trusted_root.clone())
        .ok_or(UpdateError::NoTrustedRoot)?;
    Ok(Settings {
        repository,
        trusted_root: home.join(trusted_root),
        layout: Layout::of_running()?,
        platform: askee_core::release::host_platform(),
    })
}

fn updater(home: &Home, args: &UpdateArgs) -> Result<Updater, CommandError> {
    let config = Config::load(home.dir())?;
    let settings = settings(home.dir(), &config, Some(args))?;
    let journal = Arc::new(open_journal(home)?);
    Ok(Updater::new(home.dir(), settings, journal))
}
