// The volunteer's consent portal. The session secret comes from the URL
// fragment (never sent to the server as part of a URL, never a cookie) and
// goes to the API in the askee-portal-session header. The page only records
// a *choice*; the agent signs the grant with the node key.
"use strict";

(function () {
  const { el, api, problemText, when, duration } = askee;
  const secret = location.hash.replace(/^#/, "");
  const headers = { "askee-portal-session": secret };
  const content = document.getElementById("content");
  const message = document.getElementById("message");

  function say(text, kind) {
    message.className = kind || "notice";
    message.textContent = text;
  }

  function show(...nodes) {
    content.replaceChildren(...nodes);
  }

  async function session(wait, seen) {
    const q = wait ? `?wait=${wait}&seen=${encodeURIComponent(seen)}` : "";
    return api("GET", "/v1/portal/session" + q, headers);
  }

  // Plain-language description of the manifest.
  function review(m) {
    const man = m.manifest;
    const p = man.proposed;
    return el("section", { "aria-labelledby": "review-title" }, [
      el("h2", { id: "review-title", text: "What you are asked to allow" }),
      el("p", {}, [
        "Operated by ",
        el("strong", { text: man.operator.name }),
        ` (contact: ${man.operator.contact}), coordinator ${man.operator.coordinator_url}.`,
      ]),
      el("h3", { text: "Kinds of tasks" }),
      el(
        "ul",
        { class: "plain", id: "task-types" },
        man.task_types.map((t) =>
          el("li", {}, [el("strong", { text: t.name }), `: ${t.description}; each task runs at most ${t.max_duration_hours} hour(s).`])
        )
      ),
      el("h3", { text: "At most" }),
      el("ul", { class: "plain", id: "limits" }, [
        el("li", { text: `${p.resources.cpu_percent_max}% of your CPU` }),
        el("li", { text: `${p.resources.ram_mb_max} MiB of memory` }),
        el("li", { text: `${p.resources.storage_gb_max} GiB of disk for scratch space` }),
        el("li", { text: `${p.resources.bandwidth_mbps_max} Mbit/s of network bandwidth` }),
        el("li", { text: `${p.tasks.max_duration_hours} hour(s) per task` }),
      ]),
      el("h3", { text: "When" }),
      el("p", { id: "execution", text: "Only when your computer is idle: " + man.execution + "." }),
      el("p", {
        text:
          `Consent lasts until ${when(man.grant_expires_at_max)} at the latest. ` +
          `It travels as short-lived tokens of ${duration(man.token_lifetime_seconds)}, renewed while your consent holds.`,
      }),
      el("h3", { text: "Tasks may use" }),
      el("ul", { class: "plain" }, man.data_access.map((d) => el("li", { text: d }))),
      el("h3", { text: "Tasks can never touch" }),
      el("ul", { class: "plain", id: "never" }, man.never_accessed.map((d) => el("li", { text: d }))),
      el("h3", { text: "How to stop" }),
      el("p", { id: "how-to-revoke", text: man.revocation + "." }),
    ]);
  }

  function numberField(id, label, value, max, min, hint) {
    const input = el("input", {
      type: "number", id, name: id, value, min, max, step: 1, required: true,
      "aria-describedby": `${id}-hint ${id}-error`,
    });
    return el("div", { class: "field" }, [
      el("label", { for: id, text: label }),
      input,
      el("span", { class: "hint", id: `${id}-hint`, text: hint }),
      el("span", { class: "field-error", id: `${id}-error`, role: "alert" }),
    ]);
  }

  function chooseForm(m) {
    const man = m.manifest;
    const p = man.proposed;
    const now = Math.floor(Date.now() / 1000);
    const maxDays = Math.max(1, Math.floor((man.grant_expires_at_max - now) / 86400));
    const form = el("form", { id: "choose", novalidate: true, "aria-labelledby": "choose-title" });
    form.append(
      el("h2", { id: "choose-title", text: "Your limits" }),
      el("p", { class: "muted", text: "You may lower any limit; none can be raised above what was asked." }),
      el(
        "fieldset",
        {},
        [el("legend", { text: "Task types you allow" })].concat(
          man.task_types
            .filter((t) => p.tasks.allowlist.includes(t.name))
            .map((t) => {
              const id = "type-" + t.name.replace(/[^a-z0-9-]/gi, "_");
              return el("div", {}, [
                el("input", { type: "checkbox", id, name: "task_type", value: t.name, checked: true }),
                " ",
                el("label", { for: id, text: `${t.name} (at most ${t.max_duration_hours} h per task)` }),
              ]);
            }),
          [el("span", { class: "field-error", id: "task_types-error", role: "alert" })]
        )
      ),
      el("fieldset", {}, [
        el("legend", { text: "Resources" }),
        numberField("cpu_percent", "Highest CPU share (%)", p.resources.cpu_percent_max, p.resources.cpu_percent_max, 1, `at most ${p.resources.cpu_percent_max}`),
        numberField("ram_mb", "Highest memory (MiB)", p.resources.ram_mb_max, p.resources.ram_mb_max, 1, `at most ${p.resources.ram_mb_max}`),
        numberField("storage_gb", "Highest scratch disk (GiB)", p.resources.storage_gb_max, p.resources.storage_gb_max, 0, `at most ${p.resources.storage_gb_max}`),
        numberField("bandwidth_mbps", "Highest bandwidth (Mbit/s)", p.resources.bandwidth_mbps_max, p.resources.bandwidth_mbps_max, 0, `at most ${p.resources.bandwidth_mbps_max}`),
        numberField("max_hours", "Longest single task (hours)", p.tasks.max_duration_hours, p.tasks.max_duration_hours, 1, `at most ${p.tasks.max_duration_hours}`),
        numberField("days", "Consent lasts (days)", Math.min(30, maxDays), maxDays, 1, `at most ${maxDays}`),
      ]),
      el("div", {}, [
        el("input", { type: "checkbox", id: "understood", name: "understood", required: true, "aria-describedby": "understood-error" }),
        " ",
        el("label", { for: "understood", text: "I have read what tasks may and may never do, and I know how to stop them." }),
        el("div", { class: "field-error", id: "understood-error", role: "alert" }),
      ]),
      el("p", {}, [el("button", { type: "submit", id: "grant-button", text: "Grant with these limits" })]),
      el("p", { class: "muted", text: "Your agent then signs exactly these limits with your computer's key; nothing is granted before it does." })
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      submitChoice(form, m);
    });
    return form;
  }

  function fieldError(id, text) {
    const e = document.getElementById(id + "-error");
    if (e) e.textContent = text || "";
    const input = document.getElementById(id);
    if (input) input.setAttribute("aria-invalid", text ? "true" : "false");
  }

  // Problem field names to form ids.
  const FIELD_IDS = {
    "permissions.resources.cpu_percent_max": "cpu_percent",
    "permissions.resources.ram_mb_max": "ram_mb",
    "permissions.resources.storage_gb_max": "storage_gb",
    "permissions.resources.bandwidth_mbps_max": "bandwidth_mbps",
    "permissions.tasks.max_duration_hours": "max_hours",
    grant_expires_at: "days",
  };

  async function submitChoice(form, m) {
    const p = m.manifest.proposed;
    const ids = ["cpu_percent", "ram_mb", "storage_gb", "bandwidth_mbps", "max_hours", "days"];
    ids.concat(["task_types", "understood"]).forEach((id) => fieldError(id, ""));
    let bad = null;
    const v = {};
    for (const id of ids) {
      const input = document.getElementById(id);
      const n = Number(input.value);
      const max = Number(input.max), min = Number(input.min);
      if (!Number.isInteger(n) || input.value === "") {
        fieldError(id, "enter a whole number");
        bad = bad || input;
      } else if (n > max) {
        fieldError(id, `must be at most ${max}: you cannot allow more than was asked`);
        bad = bad || input;
      } else if (n < min) {
        fieldError(id, `must be at least ${min}`);
        bad = bad || input;
      }
      v[id] = n;
    }
    const types = Array.from(form.querySelectorAll("input[name=task_type]:checked")).map((c) => c.value);
    if (!types.length) {
      fieldError("task_types", "allow at least one kind of task, or simply close this page");
      bad = bad || form.querySelector("input[name=task_type]");
    }
    const understood = document.getElementById("understood");
    if (!understood.checked) {
      fieldError("understood", "please confirm you have read the terms");
      bad = bad || understood;
    }
    if (bad) {
      bad.focus();
      say("Some limits need a look before you can grant.", "error");
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    const choice = {
      permissions: {
        resources: {
          cpu_percent_max: v.cpu_percent,
          ram_mb_max: v.ram_mb,
          storage_gb_max: v.storage_gb,
          bandwidth_mbps_max: v.bandwidth_mbps,
        },
        tasks: {
          allowlist: types,
          min_reputation: p.tasks.min_reputation,
          max_duration_hours: v.max_hours,
        },
        monitoring: p.monitoring,
      },
      grant_expires_at: Math.min(now + v.days * 86400, m.manifest.grant_expires_at_max),
    };
    document.getElementById("grant-button").disabled = true;
    const r = await api("POST", "/v1/portal/choice", headers, choice);
    if (!r.ok) {
      document.getElementById("grant-button").disabled = false;
      for (const e of (r.body && r.body.errors) || []) {
        const id = FIELD_IDS[e.field];
        if (id) fieldError(id, e.problem);
      }
      say("Not recorded: " + problemText(r.body), "error");
      return;
    }
    waitForAgent();
  }

  async function waitForAgent() {
    show(el("p", { class: "notice", id: "waiting", text: "Your choice is recorded. Your askee agent now signs it with your computer's key; this page updates when it has." }));
    say("Waiting for your agent to sign…");
    let seen = "chosen";
    for (;;) {
      const r = await session(50, seen);
      if (!r.ok) {
        say(problemText(r.body), "error");
        return;
      }
      if (r.body.state === "granted") {
        say("Granted: your agent signed your consent.", "ok");
        return statusView();
      }
      seen = r.body.state;
    }
  }

  async function revoke(tokenId) {
    const r = await api("POST", "/v1/portal/revoke", headers, { token_id: tokenId, reason: "revoked in the portal" });
    if (!r.ok) {
      say("Not revoked: " + problemText(r.body), "error");
      return;
    }
    say(`Consent withdrawn: token ${tokenId} is ${r.body.status}. Your agent stops every task at once.`, "ok");
    statusView();
  }

  async function statusView() {
    const r = await api("GET", "/v1/portal/status", headers);
    if (!r.ok) {
      say(problemText(r.body), "error");
      return;
    }
    const s = r.body;
    const tokens = [];
    for (const g of s.grants) {
      for (const t of g.tokens) {
        const action =
          t.status === "active"
            ? el("button", { type: "button", class: "danger", "data-token": t.token_id, "aria-label": `Revoke consent (token ${t.token_id})`, text: "Revoke now", onclick: () => revoke(t.token_id) })
            : el("span", { text: g.revoked_at ? `revoked ${when(g.revoked_at)} by ${g.revoked_by}: ${g.revoke_reason}` : "" });
        tokens.push([t.token_id, t.status, when(t.issued_at), when(t.expires_at), action]);
      }
    }
    const u = s.usage;
    const usage = u
      ? el("ul", { class: "plain", id: "usage" }, [
          el("li", { text: `state at the coordinator: ${u.state}` }),
          el("li", { text: `tasks running now: ${u.running}` }),
          el("li", { text: `tasks completed ${u.completed}, failed ${u.failed}, results agreed ${u.agreed}, wrong ${u.wrong}` }),
          el("li", { text: `reputation ${u.reputation.toFixed(3)}; last heartbeat ${when(u.last_heartbeat)}` }),
        ])
      : el("p", { id: "usage", class: "muted", text: "Your agent has not registered yet (start it with `askee-agent run`)." });
    show(
      el("section", { "aria-labelledby": "status-title", id: "status" }, [
        el("h2", { id: "status-title", text: "Your consent" }),
        el("p", { class: "muted", text: `Node ${s.node_public_key}. This page works until ${when(s.session_expires_at)}.` }),
        askee.table("Consent tokens", ["token", "state", "issued", "expires", "action"], tokens),
        el("h2", { text: "Live usage" }),
        usage,
        el("h2", { text: "Tasks run" }),
        askee.table("Tasks your computer ran", ["task", "type", "state", "verdict", "leased"], s.tasks.map((t) => [askee.short(t.task_id), t.task_type, t.state, t.verdict || "", when(t.leased_at)])),
        el("h2", { text: "Audit trail" }),
        askee.table("Audit log entries about your node", ["#", "time", "what", "details"], s.audit.map((a) => [a.index, askee.whenMs(a.timestamp_ms), a.kind, JSON.stringify(a.data)])),
        el("p", {}, [el("button", { type: "button", id: "refresh", text: "Refresh", onclick: () => statusView() })]),
      ])
    );
  }

  async function start() {
    if (!/^[0-9a-f]{64}$/.test(secret)) {
      say("Open the link printed by `askee-agent consent portal`: this address has no valid session.", "error");
      return;
    }
    const r = await session(0, "");
    if (!r.ok) {
      say(problemText(r.body), "error");
      return;
    }
    const s = r.body;
    if (s.state === "review") {
      say("Read what is asked, choose your limits, then grant.");
      show(review(s.manifest), chooseForm(s.manifest));
    } else if (s.state === "chosen") {
      waitForAgent();
    } else {
      statusView();
    }
  }

  start();
})();
