//! The checks on small inputs: each catches what it is for and passes clean code.

use crate::items::{function_at, functions, long_functions};
use crate::modules::{Graph, crate_graph, cycles, describe_cycle, module_of, root_refs};
use crate::tokens::{crate_uses, unsafe_sites};
use crate::{
    SourceFile, child_module_dir, is_sys_path, is_test_code, is_test_path, test_module_paths,
};

fn body(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("    let _x{i} = {i};\n"))
        .collect()
}

#[test]
fn a_long_function_is_named_with_its_line_and_length() {
    let src = format!(
        "struct S;\nimpl S {{\n    fn long(&self) {{\n{}    }}\n}}\nfn short() {{}}\n",
        body(150)
    );
    let long = long_functions(&src, 150).unwrap();
    assert_eq!(long.len(), 1, "{long:?}");
    assert_eq!(long[0].name, "S::long");
    assert_eq!(long[0].line, 3);
    assert_eq!(long[0].lines(), 152);
}

#[test]
fn a_function_at_the_ceiling_passes() {
    let src = format!("fn f() {{\n{}}}\n", body(148));
    assert_eq!(functions(&syn::parse_file(&src).unwrap())[0].lines(), 150);
    assert!(long_functions(&src, 150).unwrap().is_empty());
}

#[test]
fn test_code_may_have_long_functions() {
    let src = format!(
        "#[cfg(test)]\nmod tests {{\n    fn helper() {{\n{b}    }}\n}}\n\
         #[test]\nfn t() {{\n{b}}}\n#[tokio::test]\nasync fn u() {{\n{b}}}\n\
         #[cfg(all(test, unix))]\nfn v() {{\n{b}}}\n#[cfg(not(test))]\nfn w() {{\n{b}}}\n",
        b = body(200)
    );
    let long: Vec<String> = long_functions(&src, 150)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(long, ["w"]);
}

#[test]
fn an_unsafe_site_is_found_in_code_not_in_comments_or_strings() {
    let src = "// unsafe in a comment\nfn f() {\n    let s = \"unsafe\";\n    \
               unsafe { g() };\n}\nunsafe fn g() {}\nunsafe impl Send for S {}\n\
               unsafe extern \"C\" { fn h(); }\n#[unsafe(no_mangle)]\nextern \"C\" fn i() {}\n\
               macro_rules! m { () => { unsafe { g() } } }\n";
    let sites: Vec<(usize, &str)> = unsafe_sites(src)
        .unwrap()
        .into_iter()
        .map(|s| (s.line, s.kind))
        .collect();
    assert_eq!(
        sites,
        [
            (4, "block"),
            (6, "fn"),
            (7, "impl"),
            (8, "extern block"),
            (9, "attribute"),
            (11, "block")
        ]
    );
    let fns = functions(&syn::parse_file(src).unwrap());
    assert_eq!(function_at(&fns, 4).unwrap().name, "f");
    assert!(
        unsafe_sites("fn safe() { let unsafe_ = 1; }")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn sys_paths_and_test_paths() {
    assert!(is_sys_path("sandbox/src/sys/linux.rs"));
    assert!(is_sys_path("sandbox/src/sys/linux/worker/exec.rs"));
    assert!(is_sys_path("agent/src/idle/sys.rs"));
    assert!(!is_sys_path("sandbox/src/runtime.rs"));
    assert!(!is_sys_path("sandbox/src/sysfs/x.rs"));
    assert!(!is_sys_path("agent/src/sysinfo.rs"));
    assert!(is_test_path("server/tests/openapi.rs"));
    assert!(is_test_path("tests/tests/agent_work.rs"));
    assert!(is_test_path("agent/tests/common/mod.rs"));
    assert!(!is_test_path("tests/src/sim.rs"));
    assert!(!is_test_path("tests/benches/revocation.rs"));
}

#[test]
fn an_out_of_line_test_module_is_test_code() {
    let files = [
        SourceFile {
            path: "core/src/rules.rs".into(),
            text: "#[cfg(test)]\nmod tests;\nmod inner;\n".into(),
        },
        SourceFile {
            path: "core/src/lib.rs".into(),
            text: "#[cfg(test)]\nmod proptests;\n".into(),
        },
    ];
    let test_modules = test_module_paths(&files);
    assert!(is_test_code("core/src/rules/tests.rs", &test_modules));
    assert!(is_test_code("core/src/rules/tests/more.rs", &test_modules));
    assert!(is_test_code("core/src/proptests.rs", &test_modules));
    assert!(!is_test_code("core/src/rules/inner.rs", &test_modules));
    assert!(!is_test_code("core/src/rules.rs", &test_modules));
    assert_eq!(child_module_dir("core/src/rules.rs"), "core/src/rules");
    assert_eq!(child_module_dir("core/src/wire/mod.rs"), "core/src/wire");
    assert_eq!(child_module_dir("server/tests/openapi.rs"), "server/tests");
}

#[test]
fn crate_uses_are_path_roots_only() {
    let src = "use axum::Router;\nuse crate::http::axum_like;\nfn f() { ::tower::util(); }\n\
               fn g(x: my::axum::T) { let axum = 1; }\n\
               #[derive(sqlx::FromRow)]\nstruct R;\nfn h() { sqlx::query!(\"select\"); }\n";
    let found: Vec<(usize, String)> = crate_uses(src, &["axum", "tower", "sqlx"])
        .unwrap()
        .into_iter()
        .map(|u| (u.line, u.path))
        .collect();
    assert_eq!(
        found,
        [
            (1, "axum::Router".to_string()),
            (3, "tower::util".to_string()),
            (5, "sqlx::FromRow".to_string()),
            (7, "sqlx::query".to_string()),
        ]
    );
}

#[test]
fn module_references_resolve_crate_super_and_reexports() {
    let file = syn::parse_file(
        "use crate::{store::Store, problem};\nuse super::state::X;\n\
         fn f() { crate::keys::load(); format!(\"{}\", crate::metrics::M); }\n\
         mod inner { use super::super::audit; use super::local; }\n\
         #[cfg(test)]\nmod tests { use crate::testonly; }\n",
    )
    .unwrap();
    let names: Vec<String> = root_refs(&file, 1).into_iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        ["store", "problem", "state", "keys", "metrics", "audit"]
    );
    assert_eq!(module_of("api.rs"), Some(("api".into(), 1)));
    assert_eq!(module_of("store/mod.rs"), Some(("store".into(), 1)));
    assert_eq!(module_of("store/sql/work.rs"), Some(("store".into(), 3)));
}

fn server(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, t)| (format!("server/src/{p}"), t.to_string()))
        .collect()
}

#[test]
fn an_import_cycle_is_reported_with_where_each_edge_comes_from() {
    let files = server(&[
        (
            "lib.rs",
            "pub mod api;\npub mod coord;\npub mod store;\npub use api::ApiQuery;\n",
        ),
        ("api.rs", "use crate::coord;\npub struct ApiQuery;\n"),
        (
            "coord.rs",
            "use crate::store::Store;\n\nfn f(q: crate::ApiQuery) {}\n",
        ),
        ("store/mod.rs", "pub trait Store {}\n"),
    ]);
    let graph = crate_graph(&files, "server/src", "lib.rs").unwrap();
    let found = cycles(&graph);
    assert_eq!(
        found,
        [vec!["api".to_string(), "coord".into(), "api".into()]]
    );
    assert_eq!(
        describe_cycle(&graph, &found[0]),
        "api -> coord (server/src/api.rs:1) -> api (server/src/coord.rs:3)"
    );
}

#[test]
fn a_layered_graph_has_no_cycle() {
    let files = server(&[
        (
            "lib.rs",
            "pub mod http;\npub mod service;\npub mod store;\n",
        ),
        ("http/mod.rs", "mod consent;\n"),
        (
            "http/consent.rs",
            "use crate::service::consent;\nuse super::problem;\n",
        ),
        ("service/mod.rs", "use crate::store::Store;\n"),
        ("store/mod.rs", "use super::super::x;\n"),
    ]);
    let graph = crate_graph(&files, "server/src", "lib.rs").unwrap();
    assert!(cycles(&graph).is_empty(), "{graph:?}");
    assert_eq!(graph["http"].keys().collect::<Vec<_>>(), ["service"]);
}

#[test]
fn cycles_longer_than_two_are_found_once() {
    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(a.into())
            .or_default()
            .insert(b.into(), format!("{a}.rs:1"));
    }
    assert_eq!(
        cycles(&graph),
        [vec!["a".to_string(), "b".into(), "c".into(), "a".into()]]
    );
}
