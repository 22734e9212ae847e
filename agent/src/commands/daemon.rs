//! `run`: the daemon. Registers with the coordinator, takes work while the
//! machine is idle and consent holds, runs it in the sandbox, and updates
//! itself between tasks when updates are configured.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use super::{CommandError, create_dir};
use crate::activity::Activity;
use crate::config::Config;
use crate::exec::{Executor, Registry};
use crate::home::Home;
use crate::idle::{IdleMonitor, Sensors};
use crate::journal::{JOURNAL_FILE, Journal};
use crate::runner::{RunOptions, Runner};
use crate::update::{self, Layout, StartVerdict};
use crate::yielder::TaskSet;
use sys::shutdown_signal;

mod sys;

/// When work may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum When {
    /// Only while the machine is idle (the seed's thresholds, see config.toml).
    Idle,
    /// Whenever consent holds, even while the machine is in use (for
    /// dedicated machines; tasks still run at the lowest priority).
    Always,
}

/// The options of `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// When tasks may run.
    #[arg(long, value_enum, default_value_t = When::Idle)]
    pub when: When,
    /// Tasks run at the same time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    /// Only run tasks signed by this operator key (base64url); repeatable.
    /// Without it, any operator the coordinator registered is accepted.
    #[arg(long = "trust-operator")]
    pub trust_operator: Vec<String>,
    /// DEMO AND TEST ONLY: behave as a Byzantine node by corrupting every
    /// completed result (stdout altered before it is digested and signed),
    /// so the coordinator's quorum and exclusion can be watched at work.
    /// Hidden from help; announced loudly at start and journalled.
    #[arg(long, hide = true)]
    pub byzantine_corrupt_results: bool,
}

/// `run`: until ctrl-c or SIGTERM (or a restart into an updated binary).
pub async fn run(home: Home, args: &RunArgs) -> Result<(), CommandError> {
    // Captured before anything can switch the installed version.
    let argv: Vec<OsString> = std::env::args_os().collect();
    let binary = update::current_binary()?;
    // Outside a versioned layout (a development build) nothing is updated.
    let layout = Layout::of_binary(&binary).ok();
    let home_dir = home.dir().to_owned();
    create_dir(home.dir())?;
    let lock = update::DaemonLock::acquire(home.dir())?;
    let config = Config::load(home.dir())?;
    let journal = Arc::new(Journal::open(&home.dir().join(JOURNAL_FILE))?);
    if update::on_start(home.dir(), layout.as_ref(), &journal)? == StartVerdict::RolledBack
        && let Some(layout) = &layout
    {
        drop(lock);
        return Err(update::restart(&layout.binary(), &argv).into());
    }
    let profile = crate::profile::assess(home.dir())?;
    let tasks = TaskSet::new();
    // With `--when always` the verdict never changes; its sender lives as
    // long as the daemon.
    let (_always, always_rx) = tokio::sync::watch::channel(Activity::Idle);
    let activity = match args.when {
        When::Always => always_rx,
        When::Idle => idle_monitor(&config, tasks.clone())?,
    };
    crate::yielder::spawn(activity.clone(), tasks.clone(), journal.clone());
    let sandbox = askee_sandbox::Sandbox::new(askee_sandbox::SandboxConfig {
        worker: crate::interference::default_worker(),
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
    let _updates = scheduled_updates(
        &home_dir,
        &config,
        layout.as_ref(),
        &binary,
        &runner,
        &journal,
        argv,
    )?;
    eprintln!(
        "askee-agent running (pid {}); stop with ctrl-c or `askee-agent revoke`",
        std::process::id()
    );
    runner.run(shutdown_signal()).await;
    Ok(())
}

/// The idle monitor's verdicts, with the settings in config.toml.
fn idle_monitor(
    config: &Config,
    tasks: TaskSet,
) -> Result<tokio::sync::watch::Receiver<Activity>, CommandError> {
    let mut sensors = Sensors::host(tasks)?;
    sensors.exclusive = config.exclusive_programs.clone();
    Ok(IdleMonitor {
        sensors,
        thresholds: config.idle.clone(),
        interval: config.sample_interval(),
    }
    .spawn())
}

/// Starts the scheduled self-update when updates are configured and the
/// agent runs from a versioned layout; it stops when the handle is dropped.
fn scheduled_updates(
    home: &std::path::Path,
    config: &Config,
    layout: Option<&Layout>,
    binary: &std::path::Path,
    runner: &Runner,
    journal: &Arc<Journal>,
    argv: Vec<OsString>,
) -> Result<Option<AbortOnDrop>, CommandError> {
    let updates_on = config.update.repository.is_some() && config.update.check_interval_secs > 0;
    if !updates_on {
        return Ok(None);
    }
    if layout.is_none() {
        tracing::warn!(
            binary = %binary.display(),
            "updates are configured but this agent is not installed in a versioned layout; not checking"
        );
        return Ok(None);
    }
    let settings = super::update::settings(home, config, None)?;
    let updater = update::Updater::new(home, settings, journal.clone());
    let (slots, count) = runner.slots();
    Ok(Some(AbortOnDrop(tokio::spawn(update::schedule(
        updater,
        Duration::from_secs(config.update.check_interval_secs),
        slots,
        count,
        argv,
    )))))
}

/// Aborts a background task when the daemon ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
