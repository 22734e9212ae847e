//! Checks that read a file as a flat list of tokens: comments and string
//! contents are already gone, and macro bodies (which `syn` leaves unparsed)
//! are seen like any other code.

use std::str::FromStr as _;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// One leaf of a file's token tree, with its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Ident(String, usize),
    Punct(char, Spacing, usize),
    Literal(usize),
    Open(Delimiter, usize),
    Close(Delimiter, usize),
}

impl Tok {
    fn line(&self) -> usize {
        match self {
            Tok::Ident(_, l) | Tok::Punct(_, _, l) | Tok::Literal(l) => *l,
            Tok::Open(_, l) | Tok::Close(_, l) => *l,
        }
    }

    fn is_ident(&self, name: &str) -> bool {
        matches!(self, Tok::Ident(s, _) if s == name)
    }
}

/// The file's tokens, groups flattened into open and close markers.
pub fn flatten(src: &str) -> Result<Vec<Tok>, proc_macro2::LexError> {
    Ok(flatten_stream(TokenStream::from_str(strip_shebang(src))?))
}

/// The tokens of a stream, groups flattened into open and close markers.
pub fn flatten_stream(stream: TokenStream) -> Vec<Tok> {
    let mut out = Vec::new();
    push_stream(stream, &mut out);
    out
}

fn strip_shebang(src: &str) -> &str {
    match src.strip_prefix("#!") {
        Some(rest) if !rest.starts_with('[') => "",
        _ => src,
    }
}

fn push_stream(stream: TokenStream, out: &mut Vec<Tok>) {
    for tree in stream {
        let line = tree.span().start().line;
        match tree {
            TokenTree::Ident(i) => out.push(Tok::Ident(i.to_string(), line)),
            TokenTree::Punct(p) => out.push(Tok::Punct(p.as_char(), p.spacing(), line)),
            TokenTree::Literal(_) => out.push(Tok::Literal(line)),
            TokenTree::Group(g) => {
                out.push(Tok::Open(g.delimiter(), line));
                push_stream(g.stream(), out);
                out.push(Tok::Close(g.delimiter(), g.span_close().start().line));
            }
        }
    }
}

/// Whether `toks[i]` and `toks[i + 1]` form `::`.
fn path_sep_at(toks: &[Tok], i: usize) -> bool {
    matches!(
        (toks.get(i), toks.get(i + 1)),
        (
            Some(Tok::Punct(':', Spacing::Joint, _)),
            Some(Tok::Punct(':', _, _))
        )
    )
}

/// Whether the token before `i` continues a path into it (`a::b`, `<T>::b`),
/// so that `toks[i]` is not the path's first segment.
pub fn continues_path(toks: &[Tok], i: usize) -> bool {
    i >= 2
        && path_sep_at(toks, i - 2)
        && i >= 3
        && matches!(
            toks[i - 3],
            Tok::Ident(..) | Tok::Punct('>', _, _) | Tok::Close(..)
        )
}

/// The segments of the path starting at `toks[i]`: `a::b::C` gives `["a", "b", "C"]`.
pub fn path_from(toks: &[Tok], i: usize) -> Vec<String> {
    let mut segs = Vec::new();
    let mut j = i;
    while let Some(Tok::Ident(name, _)) = toks.get(j) {
        segs.push(name.clone());
        if !path_sep_at(toks, j + 1) {
            break;
        }
        j += 3;
    }
    segs
}

/// One place a file names an external crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateUse {
    pub krate: String,
    pub line: usize,
    /// The path as written from the crate name on (`axum::Router`).
    pub path: String,
}

/// Every place `src` names one of `crates` as the root of a path
/// (`axum::Json`, `::axum::Json`, `use axum;`, `extern crate axum`).
pub fn crate_uses(src: &str, crates: &[&str]) -> Result<Vec<CrateUse>, proc_macro2::LexError> {
    let toks = flatten(src)?;
    let mut out = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        let Tok::Ident(name, line) = tok else {
            continue;
        };
        if !crates.contains(&name.as_str()) || continues_path(&toks, i) {
            continue;
        }
        let after_use = i >= 1 && (toks[i - 1].is_ident("use") || toks[i - 1].is_ident("crate"));
        if path_sep_at(&toks, i + 1) || after_use {
            out.push(CrateUse {
                krate: name.clone(),
                line: *line,
                path: path_from(&toks, i).join("::"),
            });
        }
    }
    Ok(out)
}

/// One `unsafe` keyword in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeSite {
    pub line: usize,
    /// What the keyword introduces: "block", "fn", "impl", "trait", "extern block", "attribute".
    pub kind: &'static str,
}

/// Every `unsafe` keyword in `src` (code only: comments and strings do not count).
pub fn unsafe_sites(src: &str) -> Result<Vec<UnsafeSite>, proc_macro2::LexError> {
    let toks = flatten(src)?;
    let mut out = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        if !tok.is_ident("unsafe") {
            continue;
        }
        let kind = match toks.get(i + 1) {
            Some(Tok::Open(Delimiter::Brace, _)) => "block",
            Some(Tok::Open(Delimiter::Parenthesis, _)) => "attribute",
            Some(Tok::Ident(next, _)) => match next.as_str() {
                "impl" => "impl",
                "trait" => "trait",
                "extern" if is_extern_block(&toks, i + 1) => "extern block",
                _ => "fn",
            },
            _ => "unknown",
        };
        out.push(UnsafeSite {
            line: tok.line(),
            kind,
        });
    }
    Ok(out)
}

/// Whether the `extern` at `toks[i]` opens a block (`extern "C" { .. }`)
/// rather than a function's ABI (`extern "C" fn`).
fn is_extern_block(toks: &[Tok], i: usize) -> bool {
    let mut j = i + 1;
    if matches!(toks.get(j), Some(Tok::Literal(_))) {
        j += 1;
    }
    matches!(toks.get(j), Some(Tok::Open(Delimiter::Brace, _)))
}
