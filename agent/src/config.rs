//! The agent's settings, `config.toml` in its home: the idle thresholds, the
//! exclusive programs, the sampling interval and what the volunteer says
//! about the network. `askee-agent init` writes the defaults; a missing file
//! means the defaults.

use std::path::{Path, PathBuf};

use askee_core::idle::IdleThresholds;
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid agent configuration: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How often the idle monitor samples the machine, in milliseconds. A
    /// shorter interval yields sooner to the volunteer and costs more CPU.
    pub sample_interval_ms: u64,
    /// Programs (process names) whose presence pauses all work, e.g. games
    /// or video calls.
    pub exclusive_programs: Vec<String>,
    /// Where task scratch space lives; defaults to `work/` in the home.
    pub scratch_dir: Option<PathBuf>,
    pub network: Network,
    pub idle: IdleThresholds,
    pub update: UpdateSettings,
}

/// Signed self-update (`askee-agent update`, and the daemon's schedule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateSettings {
    /// Base URL of the release repository, e.g. `https://coord.example/tuf`;
    /// none = no updates.
    pub repository: Option<String>,
    /// The repository's root metadata shipped with the agent
    /// (`metadata/1.root.json` from `askee-server release init`).
    pub trusted_root: Option<PathBuf>,
    /// Seconds between the daemon's checks; 0 = the daemon never checks.
    pub check_interval_secs: u64,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        Self {
            repository: None,
            trusted_root: None,
            check_interval_secs: 6 * 3600,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// The connection's bandwidth in Mbit/s as the volunteer knows it; 0 = unknown.
    pub bandwidth_mbps: u64,
    /// Whether the connection is metered, when the volunteer says so.
    pub metered: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sample_interval_ms: 100,
            exclusive_programs: Vec::new(),
            scratch_dir: None,
            network: Network::default(),
            idle: IdleThresholds::default(),
            update: UpdateSettings::default(),
        }
    }
}

impl Config {
    pub fn path(home: &Path) -> PathBuf {
        home.join(FILE_NAME)
    }

    /// Loads `config.toml` from `home`; the defaults when there is none.
    pub fn load(home: &Path) -> Result<Self, ConfigError> {
        let path = Self::path(home);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Self::parse(&text).map_err(|detail| ConfigError::Malformed { path, detail })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The file as TOML, with a comment header.
    pub fn to_toml(&self) -> String {
        format!(
            "# askee agent settings; every key is optional and has this default.\n{}",
            toml::to_string_pretty(self).expect("the configuration serialises")
        )
    }

    /// Writes the defaults unless a configuration exists; returns whether it wrote.
    pub fn write_default(home: &Path) -> Result<bool, ConfigError> {
        let path = Self::path(home);
        if path.exists() {
            return Ok(false);
        }
        std::fs::write(&path, Self::default().to_toml())
            .map_err(|source| ConfigError::Write { path, source })?;
        Ok(true)
    }

    /// Writes this configuration to `config.toml` in `home` (a temporary
    /// file renamed over it).
    pub fn save(&self, home: &Path) -> Result<(), ConfigError> {
        let path = Self::path(home);
        crate::private_file::write_shared(&path, self.to_toml().as_bytes())
            .map_err(|source| ConfigError::Write { path, source })
    }

    /// How often the idle monitor samples (at least every 10 ms apart).
    pub fn sample_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.sample_interval_ms.max(10))
    }

    /// The scratch directory for tasks.
    pub fn scratch(&self, home: &Path) -> PathBuf {
        self.scratch_dir
            .clone()
            .unwrap_or_else(|| home.join("work"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_partial_files_fill_in() {
        let d = Config::default();
        assert_eq!(Config::parse(&d.to_toml()).unwrap(), d);
        let c = Config::parse(
            "exclusive_programs = [\"steam\"]\n[idle]\ninput_quiet_secs = 60\n[network]\nmetered = true\n",
        )
        .unwrap();
        assert_eq!(c.exclusive_programs, ["steam"]);
        assert_eq!(c.idle.input_quiet_secs, 60);
        assert_eq!(c.idle.cpu_quiet_secs, 300);
        assert_eq!(c.network.metered, Some(true));
        assert!(Config::parse("idle_secs = 3\n").is_err());
    }

    #[test]
    fn write_default_once_then_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), Config::default());
        assert!(Config::write_default(dir.path()).unwrap());
        std::fs::write(Config::path(dir.path()), "sample_interval_ms = 250\n").unwrap();
        assert!(!Config::write_default(dir.path()).unwrap());
        assert_eq!(Config::load(dir.path()).unwrap().sample_interval_ms, 250);
        std::fs::write(Config::path(dir.path()), "sample_interval_ms = \"x\"\n").unwrap();
        assert!(matches!(
            Config::load(dir.path()),
            Err(ConfigError::Malformed { .. })
        ));
    }
}
