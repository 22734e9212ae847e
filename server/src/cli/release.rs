//! `askee-server release …`: keys, repository creation, publishing and
//! timestamp refresh of the agent update repository.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use askee_core::release::{self as rel, Version};

use crate::release::*;

/// Sign and publish agent releases as a TUF repository.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ReleaseCommand {
    /// Manage the repository's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The root ceremony (offline, with the root keys): write
    /// metadata/1.root.json, signed by every root-N.pk8 in --keys.
    /// Ship that file with the agents as their trusted root.
    Init {
        /// Repository directory (created).
        #[arg(long)]
        repo: PathBuf,
        /// Key directory from `release keys generate`.
        #[arg(long)]
        keys: PathBuf,
        /// Root signatures a client requires.
        #[arg(long, default_value_t = 2)]
        root_threshold: u64,
        /// Root expiry: RFC 3339 time or duration (s, m, h, d).
        #[arg(long, default_value = "365d", allow_hyphen_values = true)]
        root_expires: String,
    },
    /// Sign and publish a release: the agent and its sandbox worker, as
    /// two targets of one signed targets version (needs only the
    /// targets, snapshot and timestamp keys).
    Publish {
        /// The agent binary (`askee-agent`).
        #[arg(long)]
        agent: PathBuf,
        /// The sandbox worker built with it (`askee-agent-worker`).
        #[arg(long)]
        worker: PathBuf,
        /// Release version, MAJOR.MINOR.PATCH (newer than any published).
        #[arg(long)]
        version: String,
        /// Platform, ARCH-OS (default: this host's).
        #[arg(long)]
        platform: Option<String>,
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Directory with targets.pk8, snapshot.pk8 and timestamp.pk8.
        #[arg(long)]
        keys: PathBuf,
        /// Targets expiry (RFC 3339 time or duration).
        #[arg(long, default_value = "90d", allow_hyphen_values = true)]
        targets_expires: String,
        /// Snapshot expiry.
        #[arg(long, default_value = "30d", allow_hyphen_values = true)]
        snapshot_expires: String,
        /// Timestamp expiry; keep it short and run refresh-timestamp.
        #[arg(long, default_value = "1d", allow_hyphen_values = true)]
        timestamp_expires: String,
    },
    /// Sign a new timestamp for the current snapshot (needs only
    /// timestamp.pk8); run it well within the timestamp's lifetime.
    RefreshTimestamp {
        /// Repository directory.
        #[arg(long)]
        repo: PathBuf,
        /// Directory with timestamp.pk8.
        #[arg(long)]
        keys: PathBuf,
        /// New expiry (RFC 3339 time or duration).
        #[arg(long, default_value = "1d", allow_hyphen_values = true)]
        expires: String,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create root-1..N.pk8, targets.pk8, snapshot.pk8 and
    /// timestamp.pk8 (Ed25519 PKCS#8, mode 0600) in --dir; never
    /// overwrites. Keep the root keys offline, apart from each other.
    Generate {
        #[arg(long)]
        dir: PathBuf,
        /// Number of root keys.
        #[arg(long, default_value_t = 3)]
        root_keys: usize,
    },
}

/// Runs one `release` command, printing what it did.
pub async fn run(args: &ReleaseArgs) -> Result<(), ReleaseError> {
    let now = jiff::Timestamp::now();
    match &args.command {
        ReleaseCommand::Keys {
            command: KeysCommand::Generate { dir, root_keys },
        } => {
            for k in generate_keys(dir, *root_keys).await? {
                println!("{:<10} {}  key id {}", k.role, k.path.display(), k.key_id);
            }
            println!(
                "move the root keys offline (apart from each other) after `release init`; \
                 the publisher needs only targets.pk8, snapshot.pk8 and timestamp.pk8"
            );
        }
        ReleaseCommand::Init {
            repo,
            keys,
            root_threshold,
            root_expires,
        } => {
            let expires = parse_expiry("--root-expires", root_expires, now)?;
            let done = init(repo, keys, *root_threshold, expires).await?;
            println!(
                "wrote {} ({}-of-{} root keys); ship it with the agents as their trusted root",
                done.root.display(),
                done.threshold,
                done.root_keys
            );
        }
        ReleaseCommand::Publish {
            agent,
            worker,
            version,
            platform,
            repo,
            keys,
            targets_expires,
            snapshot_expires,
            timestamp_expires,
        } => {
            let expiries = Expiries {
                targets: parse_expiry("--targets-expires", targets_expires, now)?,
                snapshot: parse_expiry("--snapshot-expires", snapshot_expires, now)?,
                timestamp: parse_expiry("--timestamp-expires", timestamp_expires, now)?,
            };
            let platform = platform.clone().unwrap_or_else(rel::host_platform);
            let p = publish(
                repo,
                keys,
                agent,
                worker,
                Version::parse(version)?,
                &platform,
                expiries,
            )
            .await?;
            println!(
                "published {} ({} bytes, sha256 {}) and {} ({} bytes, sha256 {}): targets v{}, snapshot v{}, timestamp v{}",
                p.name,
                p.length,
                p.sha256,
                p.worker_name,
                p.worker_length,
                p.worker_sha256,
                p.targets_version,
                p.snapshot_version,
                p.timestamp_version
            );
        }
        ReleaseCommand::RefreshTimestamp {
            repo,
            keys,
            expires,
        } => {
            let expires = parse_expiry("--expires", expires, now)?;
            let v = refresh_timestamp(repo, keys, expires).await?;
            println!("timestamp v{v} expires {expires}");
        }
    }
    Ok(())
}
