//! Checks that need a file's items: function spans (the length ceiling, and
//! naming the function an `unsafe` sits in) and which code is test-only.

use proc_macro2::Span;
use syn::visit::{self, Visit};
use syn::{Attribute, ImplItem, Item};

/// One function (free, method or trait default) with its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnSpan {
    /// `name`, or `Type::name` for a method.
    pub name: String,
    /// The line of `fn`.
    pub line: usize,
    /// The line of the body's closing brace.
    pub end: usize,
    /// Inside `#[cfg(test)]` code or itself a `#[test]`.
    pub test: bool,
}

impl FnSpan {
    /// Lines from `fn` to the closing brace, both included.
    pub fn lines(&self) -> usize {
        self.end + 1 - self.line
    }
}

/// Whether an attribute makes its item test-only: `#[cfg(test)]`,
/// `#[cfg(all(test, ..))]`, or a test function (`#[test]`, `#[tokio::test]`).
pub fn is_test_attr(attr: &Attribute) -> bool {
    let path = attr.path();
    if path.segments.last().is_some_and(|s| s.ident == "test") {
        return true;
    }
    if !path.is_ident("cfg") {
        return false;
    }
    let Ok(list) = attr.meta.require_list() else {
        return false;
    };
    let pred: String = list.tokens.to_string().split_whitespace().collect();
    pred == "test"
        || pred
            .strip_prefix("all(")
            .and_then(|p| p.strip_suffix(')'))
            .is_some_and(|p| p.split(',').any(|c| c == "test"))
}

fn any_test_attr(attrs: &[Attribute]) -> bool {
    attrs.iter().any(is_test_attr)
}

/// The attributes of any item.
pub fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

fn impl_item_attrs(item: &ImplItem) -> &[Attribute] {
    match item {
        ImplItem::Const(i) => &i.attrs,
        ImplItem::Fn(i) => &i.attrs,
        ImplItem::Type(i) => &i.attrs,
        ImplItem::Macro(i) => &i.attrs,
        _ => &[],
    }
}

#[derive(Default)]
struct FnCollector {
    out: Vec<FnSpan>,
    /// Depth of test-only code around the visitor.
    test: usize,
    /// The type of the `impl` or the name of the trait around the visitor.
    owner: Vec<String>,
}

impl FnCollector {
    fn push(&mut self, name: &syn::Ident, fn_token: Span, close: Span, attrs: &[Attribute]) {
        let name = match self.owner.last() {
            Some(owner) => format!("{owner}::{name}"),
            None => name.to_string(),
        };
        self.out.push(FnSpan {
            name,
            line: fn_token.start().line,
            end: close.end().line,
            test: self.test > 0 || any_test_attr(attrs),
        });
    }

    fn in_test<F: FnOnce(&mut Self)>(&mut self, test: bool, f: F) {
        self.test += usize::from(test);
        f(self);
        self.test -= usize::from(test);
    }
}

fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map_or_else(String::new, |s| s.ident.to_string()),
        _ => "_".to_string(),
    }
}

impl<'ast> Visit<'ast> for FnCollector {
    fn visit_item(&mut self, item: &'ast Item) {
        let test = any_test_attr(item_attrs(item));
        self.in_test(test, |c| visit::visit_item(c, item));
    }

    fn visit_impl_item(&mut self, item: &'ast ImplItem) {
        let test = any_test_attr(impl_item_attrs(item));
        self.in_test(test, |c| visit::visit_impl_item(c, item));
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        self.owner.push(type_name(&item.self_ty));
        visit::visit_item_impl(self, item);
        self.owner.pop();
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        self.owner.push(item.ident.to_string());
        visit::visit_item_trait(self, item);
        self.owner.pop();
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        let close = f.block.brace_token.span.close();
        self.push(&f.sig.ident, f.sig.fn_token.span, close, &f.attrs);
        // Functions nested in a function belong to no impl.
        let owner = std::mem::take(&mut self.owner);
        visit::visit_item_fn(self, f);
        self.owner = owner;
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let close = f.block.brace_token.span.close();
        self.push(&f.sig.ident, f.sig.fn_token.span, close, &f.attrs);
        let owner = std::mem::take(&mut self.owner);
        visit::visit_impl_item_fn(self, f);
        self.owner = owner;
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(body) = &f.default {
            let close = body.brace_token.span.close();
            self.push(&f.sig.ident, f.sig.fn_token.span, close, &f.attrs);
        }
        let owner = std::mem::take(&mut self.owner);
        visit::visit_trait_item_fn(self, f);
        self.owner = owner;
    }
}

/// Every function with a body in `file`, test code marked.
pub fn functions(file: &syn::File) -> Vec<FnSpan> {
    let mut c = FnCollector::default();
    c.visit_file(file);
    c.out
}

/// Functions in `src` over `max` lines, outside test code.
pub fn long_functions(src: &str, max: usize) -> syn::Result<Vec<FnSpan>> {
    let file = syn::parse_file(src)?;
    Ok(functions(&file)
        .into_iter()
        .filter(|f| !f.test && f.lines() > max)
        .collect())
}

/// The innermost function around `line`, if any.
pub fn function_at(fns: &[FnSpan], line: usize) -> Option<&FnSpan> {
    fns.iter()
        .filter(|f| f.line <= line && line <= f.end)
        .min_by_key(|f| f.lines())
}

/// Names of the out-of-line modules `file` declares test-only
/// (`#[cfg(test)] mod tests;`), at its top level.
pub fn test_module_decls(file: &syn::File) -> Vec<String> {
    file.items
        .iter()
        .filter_map(|item| match item {
            Item::Mod(m) if m.content.is_none() && any_test_attr(&m.attrs) => {
                Some(m.ident.to_string())
            }
            _ => None,
        })
        .collect()
}
