//! The layering rule of the server and client crates: no two source files import each
//! other, directly or through others. Each crate's module tree is read with `syn`, every
//! `use` and every qualified path is resolved to the file that defines the item (through
//! re-exports), and the file graph must have no cycle.
//!
//! A `mod` declaration is not an import; `pub use child::Item` is an import of `child`,
//! and a child's `use super::Item` is an import of the file that defines `Item`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// One module: the file it lives in, its items, its children and its imports.
#[derive(Default, Debug)]
struct Module {
    file: PathBuf,
    /// Names of items defined here (types, functions, traits, constants, ...).
    items: BTreeSet<String>,
    /// Child module name -> module path.
    children: BTreeMap<String, Vec<String>>,
    /// Imported name -> the path it names (as written, relative to this module).
    uses: BTreeMap<String, Vec<String>>,
    /// `use path::*` targets.
    globs: Vec<Vec<String>>,
    /// Every path of two or more segments written in the module's code.
    paths: Vec<Vec<String>>,
}

struct Crate {
    modules: BTreeMap<Vec<String>, Module>,
}

fn ident(i: &syn::Ident) -> String {
    let s = i.to_string();
    s.strip_prefix("r#").map(str::to_string).unwrap_or(s)
}

/// Collects the paths written in code (not in `use` items, not in nested modules).
struct PathCollector<'a> {
    paths: &'a mut Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for PathCollector<'_> {
    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.segments.len() >= 2 {
            self.paths
                .push(p.segments.iter().map(|s| ident(&s.ident)).collect());
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}
    fn visit_item_use(&mut self, _: &'ast syn::ItemUse) {}
}

fn flatten_use(tree: &syn::UseTree, prefix: &mut Vec<String>, m: &mut Module) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(ident(&p.ident));
            flatten_use(&p.tree, prefix, m);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let name = ident(&n.ident);
            if name == "self" {
                if let Some(last) = prefix.last() {
                    m.uses.insert(last.clone(), prefix.clone());
                }
            } else {
                let mut full = prefix.clone();
                full.push(name.clone());
                m.uses.insert(name, full);
            }
        }
        syn::UseTree::Rename(r) => {
            let mut full = prefix.clone();
            let name = ident(&r.ident);
            if name != "self" {
                full.push(name);
            }
            m.uses.insert(ident(&r.rename), full);
        }
        syn::UseTree::Glob(_) => m.globs.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(t, prefix, m);
            }
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Ident>()
                .map(|i| i == "test")
                .unwrap_or(false)
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        if !a.path().is_ident("path") {
            return None;
        }
        match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        }
    })
}

impl Crate {
    fn load(root: &Path) -> Crate {
        let mut c = Crate {
            modules: BTreeMap::new(),
        };
        c.load_file(root, Vec::new(), root.parent().unwrap().to_path_buf());
        c
    }

    /// Loads the module `path` from `file`; `dir` is where its child module files live.
    fn load_file(&mut self, file: &Path, path: Vec<String>, dir: PathBuf) {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        self.load_items(&ast.items, file, path, dir);
    }

    fn load_items(&mut self, items: &[syn::Item], file: &Path, path: Vec<String>, dir: PathBuf) {
        let mut m = Module {
            file: file.to_path_buf(),
            ..Module::default()
        };
        let mut nested = Vec::new();
        for item in items {
            let name = match item {
                syn::Item::Const(i) => Some(ident(&i.ident)),
                syn::Item::Enum(i) => Some(ident(&i.ident)),
                syn::Item::Fn(i) => Some(ident(&i.sig.ident)),
                syn::Item::Static(i) => Some(ident(&i.ident)),
                syn::Item::Struct(i) => Some(ident(&i.ident)),
                syn::Item::Trait(i) => Some(ident(&i.ident)),
                syn::Item::Type(i) => Some(ident(&i.ident)),
                syn::Item::Union(i) => Some(ident(&i.ident)),
                syn::Item::Macro(i) => i.ident.as_ref().map(ident),
                _ => None,
            };
            if let Some(name) = name {
                m.items.insert(name);
            }
            match item {
                syn::Item::Use(u) => flatten_use(&u.tree, &mut Vec::new(), &mut m),
                syn::Item::Mod(md) => {
                    let name = ident(&md.ident);
                    let mut child = path.clone();
                    child.push(name.clone());
                    m.children.insert(name.clone(), child.clone());
                    nested.push((md, child));
                }
                other => PathCollector {
                    paths: &mut m.paths,
                }
                .visit_item(other),
            }
        }
        self.modules.insert(path.clone(), m);
        for (md, child) in nested {
            let name = ident(&md.ident);
            match &md.content {
                Some((_, items)) => {
                    // An inline module belongs to its file, but for inline unit tests:
                    // nothing imports them, so they are a node of their own.
                    let node = if is_cfg_test(&md.attrs) {
                        PathBuf::from(format!("{}#{name}", file.display()))
                    } else {
                        file.to_path_buf()
                    };
                    self.load_items(items, &node, child, dir.join(&name));
                }
                None => {
                    // The children of `a.rs` and of `a/mod.rs` both live in `a/`.
                    let child_file = match path_attr(&md.attrs) {
                        Some(p) => file.parent().unwrap().join(p),
                        None => {
                            let flat = dir.join(format!("{name}.rs"));
                            if flat.exists() {
                                flat
                            } else {
                                dir.join(&name).join("mod.rs")
                            }
                        }
                    };
                    let child_dir = dir.join(&name);
                    self.load_file(&child_file, child, child_dir);
                }
            }
        }
    }

    /// Turns a path written in module `at` into an absolute path, or None when it
    /// leaves the crate or names a local item of `at`.
    fn absolute(&self, at: &[String], path: &[String]) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => at.to_vec(),
            "super" => {
                let mut b = at.to_vec();
                b.pop();
                let mut rest = rest;
                while rest.first().map(String::as_str) == Some("super") {
                    b.pop();
                    rest = &rest[1..];
                }
                let mut out = b;
                out.extend(rest.iter().cloned());
                return Some(out);
            }
            _ => {
                let m = self.modules.get(at)?;
                if let Some(child) = m.children.get(first) {
                    let mut out = child.clone();
                    out.extend(rest.iter().cloned());
                    return Some(out);
                }
                match m.uses.get(first) {
                    // `use regex;` names the crate, not itself.
                    Some(used) if used.len() > 1 || used[0] != *first => {
                        let mut abs = self.absolute(at, used)?;
                        abs.extend(rest.iter().cloned());
                        return Some(abs);
                    }
                    _ => return None,
                }
            }
        };
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The file that defines the item an absolute path names (following re-exports).
    fn defining_file(&self, abs: &[String], depth: usize) -> Option<PathBuf> {
        if depth > 16 {
            return None;
        }
        let mut module: Vec<String> = Vec::new();
        for (i, seg) in abs.iter().enumerate() {
            let m = self.modules.get(&module)?;
            if let Some(child) = m.children.get(seg) {
                module = child.clone();
                continue;
            }
            if m.items.contains(seg) {
                return Some(m.file.clone());
            }
            if let Some(used) = m.uses.get(seg) {
                let mut target = self.absolute(&module, used)?;
                target.extend(abs[i + 1..].iter().cloned());
                return self.defining_file(&target, depth + 1);
            }
            for glob in &m.globs {
                if let Some(mut target) = self.absolute(&module, glob) {
                    target.push(seg.clone());
                    target.extend(abs[i + 1..].iter().cloned());
                    if let Some(f) = self.defining_file(&target, depth + 1) {
                        return Some(f);
                    }
                }
            }
            // A method or variant of an item, or something we cannot see: the module.
            return Some(m.file.clone());
        }
        // The path names a module: no item of it is used by naming it.
        None
    }

    fn file_edges(&self) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
        let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for (at, m) in &self.modules {
            let from = m.file.clone();
            edges.entry(from.clone()).or_default();
            let written = m.uses.values().chain(m.globs.iter()).chain(m.paths.iter());
            for path in written {
                let Some(abs) = self.absolute(at, path) else {
                    continue;
                };
                if let Some(to) = self.defining_file(&abs, 0) {
                    if to != from {
                        edges.entry(from.clone()).or_default().insert(to);
                    }
                }
            }
        }
        edges
    }
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct T<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on: BTreeSet<&'a PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a PathBuf) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            if let Some(ws) = self.edges.get(v) {
                for w in ws {
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let l = self.low[w].min(self.low[v]);
                        self.low.insert(v, l);
                    } else if self.on.contains(w) {
                        let l = self.index[w].min(self.low[v]);
                        self.low.insert(v, l);
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    scc.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

fn report(krate: &str) -> Vec<String> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    cycle_report(&base.join(krate).join("src/lib.rs"), base)
}

/// The import cycles of the crate whose root file is `root`, one message each, with
/// file names relative to `base`.
fn cycle_report(root: &Path, base: &Path) -> Vec<String> {
    let c = Crate::load(root);
    let edges = c.file_edges();
    cycles(&edges)
        .into_iter()
        .map(|scc| {
            let files: BTreeSet<&PathBuf> = scc.iter().collect();
            let mut lines = vec![format!("a cycle of {} files:", scc.len())];
            for f in &scc {
                let inside: Vec<String> = edges[f]
                    .iter()
                    .filter(|t| files.contains(t))
                    .map(|t| t.strip_prefix(base).unwrap_or(t).display().to_string())
                    .collect();
                lines.push(format!(
                    "  {} -> {}",
                    f.strip_prefix(base).unwrap_or(f).display(),
                    inside.join(", ")
                ));
            }
            lines.join("\n")
        })
        .collect()
}

#[test]
fn server_files_import_each_other_in_no_cycle() {
    let found = report("server");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn client_files_import_each_other_in_no_cycle() {
    let found = report("client");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn common_files_import_each_other_in_no_cycle() {
    let found = report("common");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The checker itself: a cycle through a re-export and a qualified path is found, and
/// the same files without the back edge pass.
#[test]
fn the_checker_finds_a_cycle_through_a_reexport_and_passes_a_tree_without_one() {
    let dir = std::env::temp_dir().join(format!("orch-module-graph-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("outer")).unwrap();
    let write = |name: &str, text: &str| std::fs::write(src.join(name), text).unwrap();
    write("lib.rs", "mod outer;\nmod leaf;\n");
    write("outer/mod.rs", "mod inner;\npub use inner::Inner;\n");
    write(
        "outer/inner.rs",
        "pub struct Inner(pub crate::leaf::Leaf);\n",
    );
    write(
        "leaf.rs",
        "use crate::outer::Inner;\npub struct Leaf;\npub fn f(_: Inner) {}\n",
    );
    let found = cycle_report(&src.join("lib.rs"), &dir);

    write("leaf.rs", "pub struct Leaf;\n");
    let clean = cycle_report(&src.join("lib.rs"), &dir);
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("src/leaf.rs -> src/outer/inner.rs"),
        "{}",
        found[0]
    );
    assert!(clean.is_empty(), "{clean:?}");
}
