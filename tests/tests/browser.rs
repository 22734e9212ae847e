//! The consent portal and the operator dashboard in a real headless
//! Chromium (Debian's chromium + chromium-driver, driven over WebDriver),
//! against a real `askee-server` and real `askee-agent` processes:
//! join → review in plain words → choose limits (the form refuses a wider
//! one) → grant, signed by the agent with the node key → status page shows
//! the token → `askee-agent run` works under it → the dashboard shows the
//! node and its task → the revoke button → the agent stops. The grant is
//! made with the keyboard alone (Tab, Space, Enter, typed digits), every
//! form field must have a label, a page cannot grant by itself, and each
//! step leaves a PNG screenshot in the artifacts directory.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askee_testkit::browser::{Browser, ENTER, SPACE, is_png};
use askee_testkit::process::{AgentProcess, agent_command, binary};
use askee_testkit::work::{CAT, Coordinator, statement, submit, task, wait_for};
use serde_json::{Value, json};

/// `askee-agent consent portal`, its stdout collected line by line.
struct PortalCommand {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PortalCommand {
    fn start(home: &Path) -> Self {
        let mut child = Command::new(binary("askee-agent"))
            .arg("--home")
            .arg(home)
            .args(["consent", "portal"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn askee-agent consent portal");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Self { child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn url(&self) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.starts_with("http://") && l.contains("/portal#"))
            .cloned()
    }
}

impl Drop for PortalCommand {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every input, select and textarea on the page has a label.
async fn assert_labelled(b: &Browser, page: &str) {
    let unlabelled = b
        .eval(
            "return Array.from(document.querySelectorAll('input, select, textarea'))
                .filter(e => e.type !== 'hidden' && (!e.labels || e.labels.length === 0
                    || Array.from(e.labels).every(l => !l.textContent.trim())))
                .map(e => e.id || e.name || e.outerHTML);",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "unlabelled fields on the {page}");
    let count = b
        .eval(
            "return document.querySelectorAll('input, select, textarea').length;",
            json!([]),
        )
        .await;
    assert!(count.as_u64().unwrap() > 0, "the {page} has form fields");
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(is_png(&bytes), "{} is not a non-empty PNG", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_and_dashboard_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let Coordinator { server, op, api } = Coordinator::start(dir.path(), 8, &[CAT]).await;
    let base = server.url();
    let home = dir.path().join("volunteer");
    let run = |args: &[&str]| {
        let (ok, out, err) = agent_command(&home, args);
        assert!(ok, "askee-agent {args:?}: {out}{err}");
        out
    };
    run(&["init"]);
    run(&["join", &base]);

    // The agent opens a pairing and waits for the volunteer's choice.
    let portal = PortalCommand::start(&home);
    let url = wait_for("the portal link", Duration::from_secs(30), async || {
        portal.url()
    })
    .await;
    assert!(url.starts_with(&format!("{base}/portal#")), "{url}");
    let secret = url.rsplit('#').next().unwrap().to_owned();

    let b = Browser::start().await;
    b.goto(&url).await;
    b.wait_for(
        "the review",
        "return document.getElementById('choose') !== null;",
        Duration::from_secs(30),
    )
    .await;
    // The manifest in plain words.
    let text = b.text().await;
    for words in [
        "What you are asked to allow",
        "Kinds of tasks",
        "data-processing",
        "% of your CPU",
        "MiB of memory",
        "GiB of disk",
        "Mbit/s of network bandwidth",
        "Only when your computer is idle",
        "Tasks can never touch",
        "your files, documents and home directory",
        "other programs and their memory",
        "How to stop",
        "askee-agent revoke",
        "short-lived tokens",
    ] {
        assert!(text.contains(words), "the review lacks {words:?}:\n{text}");
    }
    assert_labelled(&b, "consent form").await;
    let shot = b.screenshot("portal-review.png").await;
    assert_png(&shot);

    // Keyboard only. Narrow the task types: drop ml-training if offered.
    let proposed_cpu = b
        .eval(
            "return Number(document.getElementById('cpu_percent').max);",
            json!([]),
        )
        .await
        .as_u64()
        .unwrap();
    let has_ml = b
        .eval(
            "return document.getElementById('type-ml-training') !== null;",
            json!([]),
        )
        .await
        == json!(true);
    if has_ml {
        b.tab_to("#type-ml-training", 40).await;
        b.keys(&[SPACE]).await;
        let checked = b
            .eval(
                "return document.getElementById('type-ml-training').checked;",
                json!([]),
            )
            .await;
        assert_eq!(checked, json!(false), "Space unchecks the focused box");
    }
    // A wider CPU share than proposed: the form refuses it, naming the field.
    b.tab_to("#cpu_percent", 40).await;
    b.select_all().await;
    b.type_text(&(proposed_cpu + 1).to_string()).await;
    b.tab_to("#understood", 40).await;
    b.keys(&[SPACE]).await;
    b.tab_to("#grant-button", 40).await;
    b.keys(&[ENTER]).await;
    b.wait_for(
        "the CPU field's error",
        "return document.getElementById('cpu_percent-error').textContent;",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        b.focused_id().await,
        "cpu_percent",
        "focus goes to the bad field"
    );
    let shot = b.screenshot("portal-too-wide.png").await;
    assert_png(&shot);
    // Nothing reached the server: the session is still waiting for a choice.
    let session = api_session(&base, &secret).await;
    assert_eq!(session["state"], "review");

    // Now a narrower share, and grant with Enter.
    b.select_all().await;
    b.type_text("20").await;
    b.tab_to("#grant-button", 40).await;
    b.keys(&[ENTER]).await;
    b.wait_for(
        "the grant to be signed by the agent",
        "return document.getElementById('status') !== null
            && document.getElementById('message').textContent.includes('Granted');",
        Duration::from_secs(60),
    )
    .await;
    let out = wait_for(
        "the agent to finish signing",
        Duration::from_secs(30),
        async || {
            let out = portal.output();
            out.contains("consent granted").then_some(out)
        },
    )
    .await;
    assert!(
        out.contains("You chose in the portal: at most 20% of your CPU"),
        "{out}"
    );
    if has_ml {
        assert!(
            !out.contains("ml-training"),
            "the choice dropped ml-training: {out}"
        );
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(home.join("state.json")).unwrap()).unwrap();
    let token_id = state["token"]["payload"]["token_id"]
        .as_str()
        .expect("the agent saved its token")
        .to_owned();
    assert_eq!(
        state["token"]["payload"]["permissions"]["resources"]["cpu_percent_max"],
        20
    );
    let text = b.text().await;
    assert!(
        text.contains(&token_id) && text.contains("active"),
        "{text}"
    );
    let shot = b.screenshot("portal-granted.png").await;
    assert_png(&shot);

    // A page cannot grant by itself: a grant without the node's signature,
    // sent from the page with the session secret, is refused, and so is a
    // direct grant; the pairing is used up either way.
    let refused = b
        .eval_async(
            "const done = arguments[arguments.length - 1];
             const secret = location.hash.slice(1);
             const forged = { statement: btoa('{}').replace(/=+$/, ''), signature: 'AAAA' };
             Promise.all([
               fetch('/v1/portal/grant', { method: 'POST', headers: { 'content-type': 'application/json', 'askee-portal-session': secret }, body: JSON.stringify(forged) }).then(r => r.status),
               fetch('/v1/grants', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(forged) }).then(r => r.status),
             ]).then(done, e => done(String(e)));",
            json!([]),
        )
        .await;
    let statuses: Vec<u64> = refused
        .as_array()
        .unwrap_or_else(|| panic!("{refused}"))
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| (400..500).contains(s)),
        "{statuses:?}"
    );
    let grants = b
        .eval_async(
            "const done = arguments[arguments.length - 1];
             fetch('/v1/portal/status', { headers: { 'askee-portal-session': location.hash.slice(1) } })
               .then(r => r.json()).then(s => done(s.grants.length), e => done(String(e)));",
            json!([]),
        )
        .await;
    assert_eq!(grants, json!(1), "only the agent-signed grant exists");

    // The agent works under the grant; a challenge task runs through it.
    let mut agent = AgentProcess::start(&home, &["--when", "always"]);
    let input = "portal challenge\n";
    let known = hex::encode(askee_sandbox::digest::result_digest(
        0,
        input.as_bytes(),
        &[],
    ));
    // Within the 20% CPU share the volunteer chose (a wider task would
    // never be offered to this node).
    let mut st = statement(CAT, input.as_bytes(), 60, 100_000_000, "portal");
    st.limits.cpu_percent = 20;
    let task_id = submit(&api, &op, st, Some(known)).await;
    let t = wait_for(
        "the task to be verified",
        Duration::from_secs(120),
        async || {
            let t = task(&api, &op, &task_id).await;
            (t["state"] != "pending").then_some(t)
        },
    )
    .await;
    assert_eq!(t["state"], "verified", "{t}\n{}", agent.log());

    // The operator dashboard, credential typed in, shows the node and task.
    b.goto(&format!("{base}/dashboard")).await;
    b.wait_for(
        "the dashboard",
        "return document.getElementById('credential') !== null;",
        Duration::from_secs(30),
    )
    .await;
    assert_labelled(&b, "dashboard").await;
    b.tab_to("#credential", 10).await;
    b.type_text(&op.credential).await;
    b.keys(&[ENTER]).await;
    let node_id = run(&["init"])
        .lines()
        .find_map(|l| l.strip_prefix("node id ").map(str::to_owned))
        .expect("the node id");
    b.wait_for(
        "the node and the task in the dashboard",
        &format!(
            "const t = document.body.innerText;
             return document.querySelector('#nodes svg') !== null
                 && document.querySelector('#tasks svg') !== null
                 && t.includes({:?}) && t.includes({:?}) && t.includes('verified');",
            &node_id[..12],
            &task_id[..12]
        ),
        Duration::from_secs(30),
    )
    .await;
    let text = b.text().await;
    for words in [
        "Nodes",
        "Tasks",
        "Discovery queue",
        "Audit checkpoints",
        "Reputation",
        "Throughput",
        "active",
    ] {
        assert!(
            text.contains(words),
            "the dashboard lacks {words:?}:\n{text}"
        );
    }
    let shot = b.screenshot("dashboard.png").await;
    assert_png(&shot);

    // Back to the status page (the secret still in the fragment): usage and
    // the task run, then revoke with the keyboard.
    b.goto(&url).await;
    b.wait_for(
        "the status page with usage",
        &format!(
            "const t = document.body.innerText;
             return document.getElementById('status') !== null
                 && t.includes('state at the coordinator: active') && t.includes({:?});",
            &task_id[..12]
        ),
        Duration::from_secs(30),
    )
    .await;
    assert_labelled_or_none(&b).await;
    let shot = b.screenshot("portal-status.png").await;
    assert_png(&shot);
    b.tab_to(&format!("button[data-token='{token_id}']"), 40)
        .await;
    b.keys(&[ENTER]).await;
    b.wait_for(
        "the revocation",
        "return document.getElementById('message').textContent.includes('Consent withdrawn');",
        Duration::from_secs(30),
    )
    .await;
    let shot = b.screenshot("portal-revoked.png").await;
    assert_png(&shot);

    // The agent learns at once through its revocation long-poll.
    wait_for(
        "the agent to stop work",
        Duration::from_secs(10),
        async || {
            agent
                .journal()
                .iter()
                .any(|e| e["kind"] == "work.stopped")
                .then_some(())
        },
    )
    .await;
    let status: Value = reqwest::get(format!("{base}/revoke/{token_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "revoked");
    assert_eq!(status["reason"], "revoked in the portal");
    assert!(agent.is_running(), "revocation stops work, not the daemon");
    for name in [
        "portal-review.png",
        "portal-too-wide.png",
        "portal-granted.png",
        "dashboard.png",
        "portal-status.png",
        "portal-revoked.png",
    ] {
        assert_png(&askee_testkit::browser::artifacts_dir().join(name));
    }
}

/// The status page has no form fields; if it gains any, they need labels.
async fn assert_labelled_or_none(b: &Browser) {
    let unlabelled = b
        .eval(
            "return Array.from(document.querySelectorAll('input, select, textarea'))
                .filter(e => !e.labels || e.labels.length === 0).length;",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!(0));
}

async fn api_session(base: &str, secret: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/v1/portal/session"))
        .header("askee-portal-session", secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
