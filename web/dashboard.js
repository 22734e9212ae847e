// The operator dashboard: read-only views over the operator API. The
// credential stays in this page's memory and goes out only as the
// Authorization header, never in a URL or a cookie.
"use strict";

(function () {
  const { el, api, problemText, when, whenMs, short, table, barChart } = askee;
  const content = document.getElementById("content");
  const message = document.getElementById("message");
  let credential = "";
  let timer = null;

  function say(text, kind) {
    message.className = kind || "notice";
    message.textContent = text;
  }

  async function get(path) {
    const r = await api("GET", path, { authorization: "Bearer " + credential });
    if (!r.ok) throw new Error(problemText(r.body));
    return r.body;
  }

  async function load() {
    let nodes, tasks, queue, checkpoints, throughput;
    try {
      [nodes, tasks, queue, checkpoints, throughput] = await Promise.all([
        get("/v1/dashboard/nodes"),
        get("/v1/dashboard/tasks"),
        get("/v1/dashboard/discovery"),
        get("/v1/dashboard/checkpoints"),
        get("/v1/dashboard/throughput"),
      ]);
    } catch (e) {
      say("Cannot load the dashboard: " + e.message, "error");
      return;
    }
    say(`Updated ${new Date().toLocaleTimeString()}: ${nodes.length} node(s), ${tasks.length} task(s).`, "ok");
    const minutes = throughput.verified.map((_, i) => new Date(throughput.since_ms + i * throughput.bucket_seconds * 1000).toLocaleTimeString());
    content.replaceChildren(
      el("section", { id: "nodes", "aria-labelledby": "nodes-title" }, [
        el("h2", { id: "nodes-title", text: "Nodes" }),
        table(
          "Registered nodes",
          ["node", "state", "reputation", "cores", "memory MiB", "disk GiB", "Mbit/s", "done", "agreed", "wrong", "last heartbeat", "excluded because"],
          nodes.map((n) => [short(n.node_key), n.state, n.reputation.toFixed(3), n.cpu_cores, n.ram_mb, n.storage_gb, n.bandwidth_mbps, n.completed, n.agreed, n.wrong, when(n.last_heartbeat), n.exclusion_reason || ""])
        ),
        el("h3", { text: "Reputation" }),
        barChart("Reputation per node (0 to 1)", nodes.map((n) => short(n.node_key)), nodes.map((n) => n.reputation), 1),
      ]),
      el("section", { id: "tasks", "aria-labelledby": "tasks-title" }, [
        el("h2", { id: "tasks-title", text: "Tasks" }),
        table(
          "Most recent tasks",
          ["task", "type", "state", "replicas (active / wanted / total, max)", "results", "quorum", "accepted digest", "created"],
          tasks.map((t) => [short(t.task_id), t.task_type + (t.bootstrap ? " (bootstrap)" : ""), t.state, `${t.replicas_active} / ${t.replicas_wanted} / ${t.replicas_total}, max ${t.max_replicas}`, t.results_received, `${t.quorum} of ${2 * t.f + 1}`, t.accepted_digest ? short(t.accepted_digest) : "", whenMs(t.created_ms)])
        ),
        el("h3", { text: "Throughput" }),
        barChart("Tasks verified per minute, last hour", minutes, throughput.verified),
      ]),
      el("section", { id: "discovery", "aria-labelledby": "discovery-title" }, [
        el("h2", { id: "discovery-title", text: "Discovery queue" }),
        table("Domains to check", ["domain", "next check", "failures", "last checked", "last outcome", "reason"], queue.map((d) => [d.domain, when(d.next_check_at), d.failures, when(d.last_checked_at), d.last_outcome || "", d.last_reason || ""])),
      ]),
      el("section", { id: "checkpoints", "aria-labelledby": "checkpoints-title" }, [
        el("h2", { id: "checkpoints-title", text: "Audit checkpoints" }),
        table("Signed checkpoints, newest first", ["size", "root", "signed"], checkpoints.slice(0, 20).map((c) => [c.size, c.root, whenMs(c.created_at_ms)])),
      ])
    );
  }

  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    credential = document.getElementById("credential").value.trim();
    if (!credential) {
      say("Enter the operator credential first.", "error");
      return;
    }
    if (timer) clearInterval(timer);
    load();
    timer = setInterval(load, 5000);
  });
})();
