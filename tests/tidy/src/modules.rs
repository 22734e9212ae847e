//! The import graph among a crate's top-level modules, and its cycles.
//!
//! A module `x` is the file `x.rs` or the folder `x/` beside the crate root;
//! it depends on `y` when its (non-test) code names `crate::y`, `use
//! crate::{y, ..}`, or reaches `y` through enough `super::`s. A name the root
//! re-exports (`pub use state::AppState`, then `crate::AppState`) counts as
//! its module.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use syn::visit::{self, Visit};
use syn::{Item, UseTree};

use crate::items::{is_test_attr, item_attrs};
use crate::tokens::{self, Tok};

/// For each module, the modules it names, each with one place it does so
/// (`path:line`).
pub type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// One place code names something at the crate root: `crate::store::Store`
/// gives `store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRef {
    pub name: String,
    pub line: usize,
}

/// The crate-root name a path starts from, seen from a module `depth` levels
/// below the root: `crate::a::b` gives `a`, and so does `super::a` at depth 1.
fn root_name(segs: &[String], depth: usize) -> Option<&str> {
    let name = match segs.first().map(String::as_str) {
        Some("crate") => segs.get(1),
        Some("super") => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            (ups == depth).then(|| segs.get(ups)).flatten()
        }
        _ => None,
    }?;
    (name != "*" && name != "self" && name != "super").then_some(name.as_str())
}

struct RefCollector {
    depth: usize,
    out: Vec<RootRef>,
}

impl RefCollector {
    fn add(&mut self, segs: &[String], line: usize) {
        if let Some(name) = root_name(segs, self.depth) {
            self.out.push(RootRef {
                name: name.to_string(),
                line,
            });
        }
    }

    fn add_use(&mut self, tree: &UseTree, prefix: &mut Vec<String>) {
        let (leaf, line) = match tree {
            UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.add_use(&p.tree, prefix);
                prefix.pop();
                return;
            }
            UseTree::Group(g) => {
                for t in &g.items {
                    self.add_use(t, prefix);
                }
                return;
            }
            UseTree::Name(n) => (n.ident.to_string(), n.ident.span().start().line),
            UseTree::Rename(r) => (r.ident.to_string(), r.ident.span().start().line),
            UseTree::Glob(g) => ("*".to_string(), g.star_token.span.start().line),
        };
        prefix.push(leaf);
        self.add(prefix, line);
        prefix.pop();
    }
}

impl<'ast> Visit<'ast> for RefCollector {
    fn visit_item(&mut self, item: &'ast Item) {
        if item_attrs(item).iter().any(is_test_attr) {
            return;
        }
        let inline_mod = matches!(item, Item::Mod(m) if m.content.is_some());
        self.depth += usize::from(inline_mod);
        visit::visit_item(self, item);
        self.depth -= usize::from(inline_mod);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if let syn::ImplItem::Fn(f) = item
            && f.attrs.iter().any(is_test_attr)
        {
            return;
        }
        visit::visit_impl_item(self, item);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if u.leading_colon.is_none() {
            self.add_use(&u.tree, &mut Vec::new());
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none()
            && let Some(first) = path.segments.first()
        {
            let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.add(&segs, first.ident.span().start().line);
        }
        visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        visit::visit_macro(self, mac);
        let toks = tokens::flatten_stream(mac.tokens.clone());
        for (i, tok) in toks.iter().enumerate() {
            if let Tok::Ident(name, line) = tok
                && (name == "crate" || name == "super")
                && !tokens::continues_path(&toks, i)
            {
                self.add(&tokens::path_from(&toks, i), *line);
            }
        }
    }
}

/// Every place the (non-test) code of `file`, a module `depth` levels below
/// the crate root, names something at the root.
pub fn root_refs(file: &syn::File, depth: usize) -> Vec<RootRef> {
    let mut c = RefCollector {
        depth,
        out: Vec::new(),
    };
    c.visit_file(file);
    c.out
}

/// The modules a crate root declares (`mod x;` or `mod x { .. }`).
pub fn declared_modules(root: &syn::File) -> BTreeSet<String> {
    root.items
        .iter()
        .filter_map(|item| match item {
            Item::Mod(m) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect()
}

/// Names the root re-exports from its modules: `pub use state::{AppState,
/// Clock}` maps `AppState` and `Clock` to `state`.
pub fn root_reexports(root: &syn::File, modules: &BTreeSet<String>) -> HashMap<String, String> {
    fn walk(tree: &UseTree, module: &str, out: &mut HashMap<String, String>) {
        match tree {
            UseTree::Path(p) => walk(&p.tree, module, out),
            UseTree::Group(g) => g.items.iter().for_each(|t| walk(t, module, out)),
            UseTree::Name(n) => drop(out.insert(n.ident.to_string(), module.to_string())),
            UseTree::Rename(r) => drop(out.insert(r.rename.to_string(), module.to_string())),
            UseTree::Glob(_) => {}
        }
    }
    let mut out = HashMap::new();
    for item in &root.items {
        let Item::Use(u) = item else { continue };
        let mut tree = &u.tree;
        // `use self::x::..` and `use crate::x::..` name the module `x` too.
        while let UseTree::Path(p) = tree
            && (p.ident == "self" || p.ident == "crate")
        {
            tree = &p.tree;
        }
        if let UseTree::Path(p) = tree
            && modules.contains(&p.ident.to_string())
        {
            walk(&p.tree, &p.ident.to_string(), &mut out);
        }
    }
    out
}

/// The top-level module a file belongs to and its depth below the root:
/// `x.rs` and `x/mod.rs` are `x` at depth 1, `x/a.rs` is `x` at depth 2.
pub fn module_of(rel: &str) -> Option<(String, usize)> {
    let parts: Vec<&str> = rel.split('/').collect();
    let name = parts[0].strip_suffix(".rs").unwrap_or(parts[0]);
    let depth = if parts.last() == Some(&"mod.rs") {
        parts.len() - 1
    } else {
        parts.len()
    };
    (depth >= 1 && !name.is_empty()).then(|| (name.to_string(), depth))
}

/// The import graph of the crate whose root is `src_dir/root` (`server/src`,
/// `lib.rs`), from `files` (path, text). Files that do not parse are listed
/// in the error.
pub fn crate_graph(
    files: &[(String, String)],
    src_dir: &str,
    root: &str,
) -> Result<Graph, Vec<String>> {
    let prefix = format!("{src_dir}/");
    let root_path = format!("{prefix}{root}");
    let parse = |path: &str, text: &str| {
        syn::parse_file(text).map_err(|e| format!("{path}: cannot parse: {e}"))
    };
    let Some((_, root_text)) = files.iter().find(|(p, _)| *p == root_path) else {
        return Err(vec![format!("{root_path}: missing")]);
    };
    let root_file = parse(&root_path, root_text).map_err(|e| vec![e])?;
    let modules = declared_modules(&root_file);
    let reexports = root_reexports(&root_file, &modules);
    let mut graph = Graph::new();
    let mut errors = Vec::new();
    for (path, text) in files {
        let Some(rel) = path.strip_prefix(&prefix) else {
            continue;
        };
        let Some((from, depth)) = module_of(rel).filter(|(m, _)| modules.contains(m)) else {
            continue;
        };
        let file = match parse(path, text) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let edges = graph.entry(from.clone()).or_default();
        for r in root_refs(&file, depth) {
            let to = match reexports.get(&r.name) {
                Some(m) => m.clone(),
                None if modules.contains(&r.name) => r.name,
                None => continue,
            };
            if to != from {
                edges
                    .entry(to)
                    .or_insert_with(|| format!("{path}:{}", r.line));
            }
        }
    }
    if errors.is_empty() {
        Ok(graph)
    } else {
        Err(errors)
    }
}

/// The shortest path from `from` to `to` along the graph's edges.
fn shortest_path(graph: &Graph, from: &str, to: &str) -> Option<Vec<String>> {
    let mut prev: HashMap<&str, &str> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if next == to {
                let mut path = vec![to.to_string(), node.to_string()];
                let mut at = node;
                while at != from {
                    at = prev[at];
                    path.push(at.to_string());
                }
                path.reverse();
                return Some(path);
            }
            if next != from && !prev.contains_key(next.as_str()) {
                prev.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The graph's cycles: for each module on one, the shortest cycle through
/// it, each cycle once, written from its smallest module and closed
/// (`["a", "b", "a"]`).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut seen = BTreeSet::new();
    for node in graph.keys() {
        let Some(mut path) = shortest_path(graph, node, node) else {
            continue;
        };
        path.pop();
        let start = (0..path.len()).min_by_key(|&i| &path[i]).unwrap_or(0);
        path.rotate_left(start);
        path.push(path[0].clone());
        seen.insert(path);
    }
    seen.into_iter().collect()
}

/// A cycle with where each of its edges comes from:
/// `api -> coord (server/src/api.rs:3) -> api (server/src/coord.rs:9)`.
pub fn describe_cycle(graph: &Graph, cycle: &[String]) -> String {
    let mut out = cycle[0].clone();
    for pair in cycle.windows(2) {
        let at = &graph[&pair[0]][&pair[1]];
        out.push_str(&format!(" -> {} ({at})", pair[1]));
    }
    out
}
