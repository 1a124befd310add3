//! The shape of the code, checked: the graph of the library's top-level modules has no cycle, and
//! the engine (`src/amqp/`) refers to no module that prints (`output`, `commands`, `terminal`)
//! by any path, and prints nothing itself. `cargo test --test architecture -- --nocapture`
//! shows the graph.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The engine's top-level module.
const ENGINE: &str = "amqp";
/// Modules that write what the user sees.
const PRINTING: &[&str] = &["output", "commands", "terminal"];
/// What printing looks like inside a file.
const PRINT_CALLS: &[&str] = &[
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
    "stdout()",
    "stderr()",
    "indicatif",
    // The stderr reporter of `Context`.
    "status.warn(",
    "status.info(",
    "status.debug(",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The module path of a file under src/ (`amqp/topology.rs` → [amqp, topology]).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The source without comments (line comments and doc comments; rmqlab has no block comments).
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            // Keep `//` inside a string literal (a URL): only cut a comment outside quotes.
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first identifier of each item of a `{...}` group starting at `text` (after the brace),
/// at depth 0.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item = String::new();
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                heads.push(std::mem::take(&mut item));
                continue;
            }
            _ => {}
        }
        // Only the leading identifier of an item counts.
        item.push(c);
    }
    heads.push(item);
    heads
        .iter()
        .filter_map(|item| {
            let head: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!head.is_empty()).then_some(head)
        })
        .collect()
}

/// Every module name that follows `prefix::` in `code`, single or grouped.
fn names_after(code: &str, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        // `prefix` must start a path, not end another identifier (`my_crate::`).
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            names.extend(group_heads(group));
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

/// The module paths that `super::` paths in the file of module `path` name, chains
/// (`super::super::x`) included: `super` is the module's parent, each further `super` its parent.
/// A name that is not a module (an item) still names its module's path: the caller keeps what
/// it knows.
fn super_paths(code: &str, path: &[String]) -> Vec<Vec<String>> {
    let mut targets = Vec::new();
    for (at, _) in code.match_indices("super::") {
        if code[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue; // inside a chain, or the end of another path
        }
        let mut rest = &code[at + "super::".len()..];
        let mut up = 1;
        while let Some(after) = rest.strip_prefix("super::") {
            rest = after;
            up += 1;
        }
        let Some(base) = path.len().checked_sub(up) else {
            continue; // above the crate root: not valid Rust
        };
        let base = &path[..base];
        let names = match rest.strip_prefix('{') {
            Some(group) => group_heads(group),
            None => {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                vec![name]
            }
        };
        for name in names {
            let mut target = base.to_vec();
            if !name.is_empty() {
                target.push(name);
            }
            if !target.is_empty() {
                targets.push(target);
            }
        }
    }
    targets
}

/// The engine's own modules (`amqp/topology.rs` → topology) → the engine modules each refers
/// to, by `super::`, `crate::amqp::` or `self::` paths. References to the engine's root
/// (`amqp/mod.rs`, which declares them all) are left out, as lib.rs is for the crate.
fn engine_graph() -> Graph {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(ENGINE);
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|file| file.file_stem().unwrap().to_string_lossy().to_string())
        .filter(|name| name != "mod")
        .collect();
    let mut graph = Graph::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        if name == "mod" {
            continue;
        }
        let code = code_of(&fs::read_to_string(file).unwrap());
        let path = [ENGINE.to_string(), name.clone()];
        // `crate::amqp::x`, and `amqp::x` inside a `crate::{…}` group.
        let mut referred = names_after(&code, &format!("crate::{ENGINE}::"));
        referred.extend(names_after(&code, &format!("{ENGINE}::")));
        referred.extend(
            super_paths(&code, &path)
                .into_iter()
                .filter(|target| target.len() > 1 && target[0] == ENGINE)
                .map(|target| target[1].clone()),
        );
        let entry = graph.entry(name.clone()).or_default();
        for other in referred {
            if other != name && modules.contains(&other) {
                entry.insert(other);
            }
        }
    }
    graph
}

/// Top-level module → the top-level modules its files refer to; and the engine's files' text.
fn graph() -> (Graph, Vec<(PathBuf, String)>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top_level: BTreeSet<String> = files
        .iter()
        .filter_map(|file| {
            module_path(file.strip_prefix(&src).unwrap())
                .first()
                .cloned()
        })
        .collect();
    let mut graph = Graph::new();
    let mut engine = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap().to_path_buf();
        let path = module_path(&relative);
        let module = path[0].clone();
        if module == "main" {
            continue; // the binary: it uses the library by its crate name
        }
        let code = code_of(&fs::read_to_string(&file).unwrap());
        let mut referred: Vec<String> = names_after(&code, "crate::");
        referred.extend(
            super_paths(&code, &path)
                .into_iter()
                .filter_map(|target| target.first().cloned()),
        );
        let entry = graph.entry(module.clone()).or_default();
        for name in referred {
            if name != module && top_level.contains(&name) {
                entry.insert(name);
            }
        }
        if module == ENGINE {
            engine.push((relative, code));
        }
    }
    // lib.rs declares every module; it is the root, not a node of the layering.
    graph.remove("lib");
    for edges in graph.values_mut() {
        edges.remove("lib");
    }
    (graph, engine)
}

fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_module_graph_has_no_cycle() {
    let (graph, _) = graph();
    for (module, edges) in &graph {
        println!(
            "{module} -> {}",
            edges.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(graph.contains_key(ENGINE) && graph.contains_key("commands"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules form a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_engine_modules_have_no_cycle() {
    let graph = engine_graph();
    for (module, edges) in &graph {
        println!(
            "{ENGINE}::{module} -> {}",
            edges.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert!(graph.contains_key("topology") && graph.contains_key("events"));
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the engine's modules form a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_engine_neither_prints_nor_refers_to_what_prints() {
    let (graph, engine) = graph();
    for printing in PRINTING {
        assert!(
            !graph[ENGINE].contains(*printing),
            "the engine (src/{ENGINE}/) refers to `{printing}`"
        );
    }
    assert!(!engine.is_empty());
    for (file, code) in engine {
        for call in PRINT_CALLS {
            assert!(
                !code.contains(call),
                "src/{} prints ({call}): the engine reports events, commands print",
                file.display()
            );
        }
    }
}

#[test]
fn the_checker_sees_grouped_and_nested_paths() {
    let code = "use crate::{\n    amqp::{a, b},\n    cli::X,\n    exit::Exit,\n};\nfn f() { crate::output::g(); }";
    assert_eq!(
        names_after(code, "crate::"),
        ["amqp", "cli", "exit", "output"]
    );
    let cycle: Graph = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert!(find_cycle(&cycle).is_some());
}

#[test]
fn the_checker_resolves_super_chains() {
    let at = |file: &[&str]| file.iter().map(|part| part.to_string()).collect::<Vec<_>>();
    let code = "use super::super::output::x;\nuse super::{events, Session};\nfn f() { super::topology::g(); }";
    let targets = super_paths(code, &at(&["amqp", "inner", "leaf"]));
    assert_eq!(
        targets,
        [
            at(&["amqp", "output"]),
            at(&["amqp", "inner", "events"]),
            at(&["amqp", "inner", "Session"]),
            at(&["amqp", "inner", "topology"]),
        ]
    );
    // From a file one level down, `super::super::` is the crate root.
    let targets = super_paths("use super::super::output::x;", &at(&["amqp", "topology"]));
    assert_eq!(targets, [at(&["output"])]);
    let targets = super_paths("use super::output;", &at(&["cli"]));
    assert_eq!(targets, [at(&["output"])]);
}
