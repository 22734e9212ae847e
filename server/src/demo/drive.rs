//! The demo's course once the agents run: bootstrapping until the liar is
//! caught, the example tasks, and the results and standings in plain words.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use askee_core::b64;
use askee_core::wire::v1::{NodeState, TaskState, TaskStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use super::operator::{Operator, TaskSpec, statement};
use super::volunteers::Agent;
use super::{BOOTSTRAP, DemoArgs, Uploads};

pub(super) fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

pub(super) fn short(node_id: &str) -> &str {
    node_id.get(..10).unwrap_or(node_id)
}

/// Polls `f` every 200 ms until it returns `Some`, or fails at `deadline`.
pub(super) async fn until<T>(
    what: &str,
    deadline: Instant,
    mut f: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drives the demo once the agents run: bootstrapping, the example tasks,
/// the results and every node's standing; `Ok(true)` when every task was
/// verified and the liar excluded.
pub(super) async fn drive(
    args: &DemoArgs,
    op: &Operator,
    agents: &[Agent],
    uploads: &Uploads,
    text: &[u8],
    deadline: Instant,
) -> anyhow::Result<bool> {
    let ids: Vec<&str> = agents.iter().map(|a| a.node_id.as_str()).collect();
    until("every agent to register", deadline, async || {
        let ledger = op.ledger().await?;
        Ok(ids
            .iter()
            .all(|id| ledger.iter().any(|n| n.node_id == *id))
            .then_some(()))
    })
    .await?;
    let multi = MultiProgress::new();
    bootstrap(op, agents, &uploads.echo, &multi, deadline).await?;
    let runs = submit_examples(args, op, &uploads.shas, text, &multi).await?;
    let mut statuses = Vec::new();
    for run in &runs {
        let status = until(&format!("the {} task", run.label), deadline, async || {
            let s = op.task(&run.task_id).await?;
            run.bar
                .set_length(u64::from(2 * s.f + 1).max(u64::from(s.replicas_assigned)));
            run.bar.set_position(u64::from(s.results_received));
            run.bar.set_message(s.state.as_str().to_owned());
            Ok(s.state.is_final().then_some(s))
        })
        .await?;
        run.bar.finish();
        statuses.push(status);
    }
    drop(multi);
    let (all_verified, summary_tasks) = report_results(&runs, &statuses);
    let (liar_excluded, summary_nodes) = report_nodes(op, agents).await?;
    let summary = json!({
        "server": op.base,
        "tasks": summary_tasks,
        "nodes": summary_nodes,
        "ok": all_verified && liar_excluded,
    });
    let path = args.dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(all_verified && liar_excluded)
}

/// Bootstrapping: challenges with known answers until every honest node
/// has earned its reputation and the liar has been caught; then the
/// challenges nobody needs any more are withdrawn.
pub(super) async fn bootstrap(
    op: &Operator,
    agents: &[Agent],
    echo: &str,
    multi: &MultiProgress,
    deadline: Instant,
) -> anyhow::Result<()> {
    println!(
        "\nbootstrapping: each new node must answer {BOOTSTRAP} challenges with known answers before real work"
    );
    let honest: Vec<&Agent> = agents.iter().filter(|a| !a.byzantine).collect();
    let liar = agents
        .iter()
        .find(|a| a.byzantine)
        .context("no byzantine agent")?;
    let boot = multi.add(ProgressBar::new(BOOTSTRAP * honest.len() as u64));
    boot.set_style(bar_style(
        "{prefix:>14} {bar:30.green} {pos}/{len} right answers  {msg}",
    ));
    boot.set_prefix("honest nodes");
    let caught = multi.add(ProgressBar::new(u64::from(
        askee_core::rules::ByzantinePolicy::default().wrong_results,
    )));
    caught.set_style(bar_style(
        "{prefix:>14} {bar:30.red} {pos}/{len} wrong answers  {msg}",
    ));
    caught.set_prefix(liar.name.clone());
    let mut challenges = Challenges::default();
    loop {
        let ledger = op.ledger().await?;
        let entry = |id: &str| ledger.iter().find(|n| n.node_id == id);
        let right: u64 = honest
            .iter()
            .map(|a| entry(&a.node_id).map_or(0, |n| n.agreed.min(BOOTSTRAP)))
            .sum();
        boot.set_position(right);
        let liar_entry = entry(&liar.node_id);
        caught.set_position(liar_entry.map_or(0, |n| n.wrong));
        if let Some(n) = liar_entry {
            caught.set_message(format!("state {}", n.state.as_str()));
        }
        // Done when every honest node has its right answers and no
        // challenge still running (a challenge withdrawn while it runs would
        // count as unfinished work against the node).
        let done_honest = right == BOOTSTRAP * honest.len() as u64
            && honest
                .iter()
                .all(|a| entry(&a.node_id).is_some_and(|n| n.completed >= n.assigned));
        let done_liar = liar_entry.is_some_and(|n| n.state == NodeState::Byzantine);
        if done_honest && done_liar {
            break;
        }
        if Instant::now() > deadline {
            bail!("bootstrapping did not finish in time");
        }
        challenges.keep_on_offer(op, echo, agents.len()).await?;
        boot.set_message(format!("{} challenges sent", challenges.sent.len()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    boot.finish();
    caught.finish_with_message("excluded as byzantine; its consent token is revoked");
    for id in &challenges.sent {
        if op.task(id).await?.state == TaskState::Pending {
            op.post(&format!("/v1/tasks/{id}/cancel"), &json!({}))
                .await?;
        }
    }
    Ok(())
}

/// The bootstrapping challenges submitted so far.
#[derive(Default)]
pub(super) struct Challenges {
    pub(super) sent: Vec<String>,
    /// Those not yet answered rightly.
    pub(super) pending: Vec<String>,
    pub(super) round: u32,
}

impl Challenges {
    /// Keeps challenges on offer: a wrong answer goes back to the pool.
    pub(super) async fn keep_on_offer(
        &mut self,
        op: &Operator,
        echo: &str,
        agents: usize,
    ) -> anyhow::Result<()> {
        let mut still = Vec::new();
        for id in &self.pending {
            if op.task(id).await?.state == TaskState::Pending {
                still.push(id.clone());
            }
        }
        self.pending = still;
        let want = if self.sent.is_empty() {
            BOOTSTRAP as usize * agents
        } else {
            4
        };
        while self.pending.len() < want && self.sent.len() < 64 {
            let round = self.round;
            let input = format!("challenge {round}: say this back exactly\n");
            let known = hex::encode(askee_sandbox::digest::result_digest(
                0,
                input.as_bytes(),
                &[],
            ));
            let id = op
                .submit(
                    statement(TaskSpec {
                        module_sha256: echo,
                        task_type: "data-processing",
                        args: Vec::new(),
                        stdin: input.as_bytes(),
                        files: Vec::new(),
                        f: 0,
                        nonce: format!("challenge-{round}"),
                    }),
                    Some(known),
                )
                .await?;
            self.sent.push(id.clone());
            self.pending.push(id);
            self.round += 1;
        }
        Ok(())
    }
}

/// One example task as submitted.
pub(super) struct ExampleTask<'a> {
    pub(super) label: &'static str,
    pub(super) task_type: &'static str,
    pub(super) module_sha256: &'a str,
    pub(super) args: Vec<String>,
    pub(super) files: Vec<(&'static str, &'a [u8])>,
}

/// An example task on its way, with its progress bar.
pub(super) struct ExampleRun {
    pub(super) label: &'static str,
    pub(super) task_type: &'static str,
    pub(super) task_id: String,
    pub(super) bar: ProgressBar,
}

/// Submits the example tasks, each on three nodes, two of which must agree.
pub(super) async fn submit_examples(
    args: &DemoArgs,
    op: &Operator,
    shas: &[String],
    text: &[u8],
    multi: &MultiProgress,
) -> anyhow::Result<Vec<ExampleRun>> {
    println!("\nthe example tasks, each replicated on 3 nodes (f = 1: 2 matching results needed):");
    let specs = [
        ExampleTask {
            label: "π estimate",
            task_type: "scientific-compute",
            module_sha256: &shas[0],
            args: vec![
                "--seed".to_owned(),
                args.pi_seed.to_string(),
                "--samples".to_owned(),
                args.pi_samples.to_string(),
            ],
            files: Vec::new(),
        },
        ExampleTask {
            label: "word counts",
            task_type: "data-processing",
            module_sha256: &shas[1],
            args: vec![
                "/input/text.txt".to_owned(),
                "--top".to_owned(),
                "8".to_owned(),
            ],
            files: vec![("text.txt", text)],
        },
        ExampleTask {
            label: "SGD training",
            task_type: "ml-training",
            module_sha256: &shas[2],
            args: vec!["--seed".to_owned(), args.sgd_seed.to_string()],
            files: Vec::new(),
        },
    ];
    let mut runs = Vec::new();
    for spec in specs {
        let task_id = op
            .submit(
                statement(TaskSpec {
                    module_sha256: spec.module_sha256,
                    task_type: spec.task_type,
                    args: spec.args,
                    stdin: b"",
                    files: spec.files,
                    f: 1,
                    nonce: uuid::Uuid::new_v4().simple().to_string(),
                }),
                None,
            )
            .await?;
        let bar = multi.add(ProgressBar::new(3));
        bar.set_style(bar_style(
            "{prefix:>14} {bar:30.cyan} {pos}/{len} results  {msg}",
        ));
        bar.set_prefix(spec.label);
        bar.enable_steady_tick(Duration::from_millis(200));
        runs.push(ExampleRun {
            label: spec.label,
            task_type: spec.task_type,
            task_id,
            bar,
        });
    }
    Ok(runs)
}

/// Prints the results in plain words; whether all were verified, and their
/// summary.
pub(super) fn report_results(
    runs: &[ExampleRun],
    statuses: &[TaskStatus],
) -> (bool, serde_json::Map<String, serde_json::Value>) {
    println!("\nverified results:");
    let mut all_verified = true;
    let mut summary_tasks = serde_json::Map::new();
    for (run, s) in runs.iter().zip(statuses) {
        let (label, task_type) = (run.label, run.task_type);
        let stdout = s
            .stdout
            .as_deref()
            .and_then(|t| b64::decode(t).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let agreeing = s
            .evidence
            .iter()
            .filter(|e| Some(&e.result_digest) == s.accepted_digest.as_ref())
            .count();
        if s.state != TaskState::Verified {
            all_verified = false;
            println!(
                "  {label}: {} — {}",
                s.state.as_str(),
                s.reason.as_deref().unwrap_or("no reason given")
            );
        } else {
            println!(
                "  {label} ({task_type}), {agreeing} of {} results agree:",
                s.evidence.len()
            );
            for line in plain_words(label, &stdout) {
                println!("    {line}");
            }
        }
        summary_tasks.insert(
            label.to_owned(),
            json!({
                "task_id": run.task_id,
                "task_type": task_type,
                "state": s.state.as_str(),
                "agreeing": agreeing,
                "results": s.evidence.len(),
                "accepted_digest": s.accepted_digest,
                "stdout": stdout,
            }),
        );
    }
    (all_verified, summary_tasks)
}

/// Prints every node's standing and what became of the liar; whether it
/// was excluded, and the nodes' summary.
pub(super) async fn report_nodes(
    op: &Operator,
    agents: &[Agent],
) -> anyhow::Result<(bool, Vec<serde_json::Value>)> {
    let ledger = op.ledger().await?;
    println!("\nnodes:");
    let mut summary_nodes = Vec::new();
    let mut liar_excluded = false;
    for a in agents {
        let Some(n) = ledger.iter().find(|n| n.node_id == a.node_id) else {
            continue;
        };
        let corrupted = a.journal_count("byzantine.corrupted");
        println!(
            "  {} {}…  {:<9} reputation {:.2}  right {}  wrong {}{}",
            a.name,
            short(&a.node_id),
            n.state.as_str(),
            n.reputation,
            n.agreed,
            n.wrong,
            match &n.exclusion_reason {
                Some(r) => format!("  excluded: {r}"),
                None => String::new(),
            }
        );
        if a.byzantine {
            liar_excluded = n.state == NodeState::Byzantine;
            println!(
                "    {} lied {corrupted} time(s) (its own journal records each lie); the coordinator {}",
                a.name,
                if liar_excluded {
                    "caught it, excluded it and revoked its consent token"
                } else {
                    "has NOT excluded it"
                }
            );
        }
        summary_nodes.push(json!({
            "name": a.name,
            "node_id": a.node_id,
            "byzantine": a.byzantine,
            "state": n.state.as_str(),
            "reputation": n.reputation,
            "agreed": n.agreed,
            "wrong": n.wrong,
            "exclusion_reason": n.exclusion_reason,
            "corrupted_results": corrupted,
        }));
    }
    Ok((liar_excluded, summary_nodes))
}

/// A task's output, explained.
pub(super) fn plain_words(label: &str, stdout: &str) -> Vec<String> {
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or("?")
            .to_owned()
    };
    match label {
        "π estimate" => vec![format!(
            "π ≈ {} from {} random points ({} inside the quarter circle, seed {})",
            field("pi"),
            field("samples"),
            field("inside"),
            field("seed")
        )],
        "word counts" => {
            let top: Vec<String> = stdout
                .lines()
                .filter_map(|l| {
                    let (n, w) = l.split_once(' ')?;
                    n.parse::<u64>().ok().map(|n| format!("{w} ×{n}"))
                })
                .collect();
            vec![format!(
                "{} words, {} distinct; most frequent: {}",
                field("words"),
                field("distinct"),
                top.join(", ")
            )]
        }
        "SGD training" => {
            let losses: Vec<&str> = stdout
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("epoch ")?
                        .split_once(" loss ")
                        .map(|(_, v)| v)
                })
                .collect();
            vec![format!("loss per epoch: {}", losses.join(" → ")), {
                let b = field("b");
                let b = match b.strip_prefix('-') {
                    Some(minus) => format!("− {minus}"),
                    None => format!("+ {b}"),
                };
                format!(
                    "fitted y = {}·x {b} (the data came from y = 3·x − 2 plus noise)",
                    field("w")
                )
            }]
        }
        _ => stdout.lines().map(str::to_owned).collect(),
    }
}
