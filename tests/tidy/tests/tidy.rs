//! Tidy checks over the whole tree, as ordinary tests: each failure names
//! every file (and line or function) that breaks its rule, at once.
//! Vendored upstream code (`vendor/`) and build output are not judged.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use askee_tidy::items::{self, function_at};
use askee_tidy::modules::{crate_graph, cycles, describe_cycle};
use askee_tidy::tokens::{crate_uses, unsafe_sites};
use askee_tidy::{SourceFile, is_sys_path, is_test_code, report, rust_files, workspace_root};

/// Where the server may name the HTTP stack (`HTTP_STACK`): the `http`
/// layer, the crate roots, and the command line that starts the server.
const HTTP_STACK_ALLOWED: &[&str] = &[
    "server/src/http/",
    "server/src/lib.rs",
    "server/src/main.rs",
    "server/src/cli/",
    "server/src/demo.rs",
];
const HTTP_STACK: &[&str] = &["axum", "tower", "tower_http", "hyper"];

/// `unsafe` outside `sys/` modules: (file, function, why it stays there).
const UNSAFE_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "sandbox/src/runtime.rs",
        "WasmEngine::load_artifact",
        "wasmtime's Module::deserialize_file is unsafe by API (precompiled code), not a platform call",
    ),
    (
        "sandbox/src/runtime.rs",
        "WasmEngine::load_artifact_bytes",
        "wasmtime's Module::deserialize, the same from memory",
    ),
    (
        "tests/src/dns.rs",
        "Nsd::stop",
        "test harness: kill(2) on the process group of the NSD it started",
    ),
    (
        "sandbox/tests/hostile.rs",
        "only_the_task_runs_at_idle_priority",
        "test: geteuid(2) and ioprio_get(2) to observe the sandbox from outside",
    ),
    (
        "sandbox/tests/spare_netns.rs",
        "issue_3_an_ended_tasks_network_namespace_serves_a_later_task_never_two_at_once",
        "test: geteuid(2), whether the run can expect root-only behaviour",
    ),
    (
        "sandbox/tests/spare_root.rs",
        "issue_3_a_prepared_spare_sees_only_the_mounts_its_request_passes",
        "test: geteuid(2), whether the run can expect root-only behaviour",
    ),
];

/// Crates `core` may depend on: protocol types and pure rules, no I/O.
const CORE_DEPENDENCIES: &[&str] = &[
    "base64",
    "ed25519-dalek",
    "hex",
    "jsonwebtoken",
    "serde",
    "serde_json",
    "serde_path_to_error",
    "sha2",
    "thiserror",
    "utoipa",
];
/// Never in `core`, whatever the allowlist says: runtimes, databases, HTTP.
const CORE_NEVER: &[&str] = &["tokio", "sqlx", "axum", "reqwest", "hyper", "tower"];

/// Uses of a banned crate that are allowed: (path prefix, path as written, why).
const CRATE_USE_ALLOWED: &[(&str, &str, &str)] = &[(
    "sandbox/",
    "tokio::io::AsyncWrite",
    "the trait wasmtime-wasi's custom stdout stream implements; the sandbox runs no tokio runtime",
)];

const MAX_FILE_LINES: usize = 1200;
const MAX_FN_LINES: usize = 150;
const MAX_ARCHITECTURE_LINES: usize = 400;

fn files() -> &'static [SourceFile] {
    static FILES: OnceLock<Vec<SourceFile>> = OnceLock::new();
    FILES.get_or_init(|| rust_files(&workspace_root()))
}

fn check(name: &str, violations: &[String]) {
    if let Err(message) = report(name, violations) {
        panic!("{message}");
    }
}

#[test]
fn the_tree_is_found() {
    let paths: Vec<&str> = files().iter().map(|f| f.path.as_str()).collect();
    for expected in [
        "core/src/lib.rs",
        "server/src/lib.rs",
        "tests/tidy/tests/tidy.rs",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} not listed: {paths:?}"
        );
    }
    assert!(!paths.iter().any(|p| p.starts_with("vendor/")));
}

#[test]
fn no_unsafe_outside_sys_modules() {
    let mut violations = Vec::new();
    let mut used = BTreeSet::new();
    for f in files().iter().filter(|f| !is_sys_path(&f.path)) {
        let sites = match unsafe_sites(&f.text) {
            Ok(s) => s,
            Err(e) => {
                violations.push(format!("{}: cannot tokenize: {e}", f.path));
                continue;
            }
        };
        if sites.is_empty() {
            continue;
        }
        let fns = syn::parse_file(&f.text)
            .map(|file| items::functions(&file))
            .unwrap_or_default();
        for site in sites {
            let func = function_at(&fns, site.line).map(|s| s.name.as_str());
            let allowed = UNSAFE_ALLOWED
                .iter()
                .position(|(p, n, _)| *p == f.path && Some(*n) == func);
            match allowed {
                Some(i) => drop(used.insert(i)),
                None => violations.push(format!(
                    "{}:{}: unsafe {} in {} (move it into a sys/ module)",
                    f.path,
                    site.line,
                    site.kind,
                    func.map_or("no function".to_string(), |n| format!("fn {n}")),
                )),
            }
        }
    }
    for (i, (path, func, _)) in UNSAFE_ALLOWED.iter().enumerate() {
        if !used.contains(&i) {
            violations.push(format!(
                "{path}: fn {func} is in UNSAFE_ALLOWED but has no unsafe: drop the entry"
            ));
        }
    }
    check("unsafe outside sys/ modules", &violations);
}

#[test]
fn core_depends_only_on_its_allowlist() {
    for never in CORE_NEVER {
        assert!(
            !CORE_DEPENDENCIES.contains(never),
            "{never} may never be a dependency of core"
        );
    }
    let path = workspace_root().join("core/Cargo.toml");
    let text = std::fs::read_to_string(&path).expect("core/Cargo.toml");
    let manifest: toml::Table = text.parse().expect("core/Cargo.toml parses");
    let mut tables = vec![("[dependencies]".to_string(), manifest.get("dependencies"))];
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for (cfg, t) in targets {
            tables.push((
                format!("[target.'{cfg}'.dependencies]"),
                t.get("dependencies"),
            ));
        }
    }
    let mut violations = Vec::new();
    for (table, deps) in tables {
        for (key, spec) in deps.and_then(|d| d.as_table()).into_iter().flatten() {
            let name = spec.get("package").and_then(|p| p.as_str()).unwrap_or(key);
            if !CORE_DEPENDENCIES.contains(&name) {
                violations.push(format!(
                    "core/Cargo.toml {table}: {name} is not in core's allowlist"
                ));
            }
        }
    }
    check("core's dependencies", &violations);
}

/// One layering rule: in files under any of `scope`, `crates` may be named
/// only under `allowed`.
struct Layer {
    crates: &'static [&'static str],
    scope: &'static [&'static str],
    allowed: &'static [&'static str],
    why: &'static str,
}

const LAYERS: &[Layer] = &[
    Layer {
        crates: HTTP_STACK,
        scope: &["server/src/"],
        allowed: HTTP_STACK_ALLOWED,
        why: "the HTTP stack belongs to the http layer",
    },
    Layer {
        crates: &["sqlx"],
        scope: &["server/src/"],
        allowed: &["server/src/store/"],
        why: "SQL belongs to the store",
    },
    Layer {
        crates: &["axum", "sqlx", "tokio"],
        scope: &["server/src/verdict/", "core/", "sandbox/"],
        allowed: &[],
        why: "pure verdicts, core and the sandbox know no HTTP, SQL or async runtime",
    },
    Layer {
        crates: &["axum", "sqlx"],
        scope: &["agent/"],
        allowed: &[],
        why: "the agent serves no HTTP and holds no database",
    },
];

fn under(path: &str, prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .any(|p| path == *p || (p.ends_with('/') && path.starts_with(p)))
}

#[test]
fn layers_name_only_their_own_crates() {
    let mut violations = Vec::new();
    let mut allowed_uses = 0;
    for f in files() {
        for layer in LAYERS.iter().filter(|l| under(&f.path, l.scope)) {
            if under(&f.path, layer.allowed) {
                allowed_uses += crate_uses(&f.text, layer.crates).map_or(0, |u| u.len());
                continue;
            }
            let uses = match crate_uses(&f.text, layer.crates) {
                Ok(u) => u,
                Err(e) => {
                    violations.push(format!("{}: cannot tokenize: {e}", f.path));
                    continue;
                }
            };
            for u in uses {
                let excepted = CRATE_USE_ALLOWED
                    .iter()
                    .any(|(p, path, _)| f.path.starts_with(p) && u.path == *path);
                if !excepted {
                    violations.push(format!("{}:{}: {} ({})", f.path, u.line, u.path, layer.why));
                }
            }
        }
    }
    // Finding no use where uses belong would mean the scan finds nothing.
    assert!(
        allowed_uses > 0,
        "no use of axum or sqlx found in server/src at all"
    );
    check("layering", &violations);
}

#[test]
fn no_file_is_too_long() {
    let violations: Vec<String> = files()
        .iter()
        .map(|f| (f, f.text.lines().count()))
        .filter(|(_, n)| *n > MAX_FILE_LINES)
        .map(|(f, n)| format!("{}: {n} lines (at most {MAX_FILE_LINES})", f.path))
        .collect();
    check("file length", &violations);
}

#[test]
fn no_function_is_too_long_outside_tests() {
    let test_modules = askee_tidy::test_module_paths(files());
    let mut violations = Vec::new();
    for f in files()
        .iter()
        .filter(|f| !is_test_code(&f.path, &test_modules))
    {
        match items::long_functions(&f.text, MAX_FN_LINES) {
            Ok(long) => violations.extend(long.into_iter().map(|s| {
                format!(
                    "{}:{}: fn {} is {} lines (at most {MAX_FN_LINES})",
                    f.path,
                    s.line,
                    s.name,
                    s.lines()
                )
            })),
            Err(e) => violations.push(format!("{}: cannot parse: {e}", f.path)),
        }
    }
    check("function length", &violations);
}

#[test]
fn no_import_cycle_among_server_modules() {
    let server: Vec<(String, String)> = files()
        .iter()
        .filter(|f| f.path.starts_with("server/src/"))
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    let mut violations = Vec::new();
    // The library, and the binary's own modules (`crate::` there is main.rs).
    for root in ["lib.rs", "main.rs"] {
        match crate_graph(&server, "server/src", root) {
            Ok(graph) => {
                // A graph without edges would pass for the wrong reason.
                assert!(
                    root == "main.rs" || graph.values().any(|e| !e.is_empty()),
                    "server/src/{root}: no module names another: {graph:?}"
                );
                violations.extend(
                    cycles(&graph)
                        .iter()
                        .map(|c| format!("server/src/{root}: {}", describe_cycle(&graph, c))),
                );
            }
            Err(errors) => violations.extend(errors),
        }
    }
    check("import cycles among server modules", &violations);
}

#[test]
fn architecture_md_fits_on_a_few_screens() {
    let text =
        std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let lines = text.lines().count();
    assert!(
        lines <= MAX_ARCHITECTURE_LINES,
        "ARCHITECTURE.md: {lines} lines (at most {MAX_ARCHITECTURE_LINES}); deep dives belong in docs/design/"
    );
}
