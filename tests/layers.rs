//! The floor rule of `src/lib.rs`: a module imports only from the floors below its own, and
//! nothing below the command line knows clap or a flag name. Read from the sources as text.
use std::path::{Path, PathBuf};

/// The names in backticks of a table cell, each as a module: `src/` and a trailing `/` or `.rs`
/// left off (`src/main.rs` and `main.rs` are `main`).
fn cell_modules(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|name| {
            let name = name.trim_start_matches("src/").trim_end_matches('/');
            name.trim_end_matches(".rs").to_string()
        })
        .collect()
}

/// The modules of the floor table in `src/lib.rs`'s doc comment, top to bottom, with their floors
/// (`main.rs` stands on the command line): the one list of floors.
fn floors() -> Vec<(String, u32)> {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let floors: Vec<(String, u32)> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter_map(|row| {
            let mut cells = row.split(" | ");
            let floor: u32 = cells.next()?.trim().parse().ok()?;
            Some(
                cell_modules(cells.next()?)
                    .into_iter()
                    .map(move |m| (m, floor)),
            )
        })
        .flatten()
        .collect();
    assert!(floors.len() > 10, "src/lib.rs's floor table: {floors:?}");
    floors
}

fn floor(floors: &[(String, u32)], module: &str) -> Option<u32> {
    floors.iter().find(|(m, _)| m == module).map(|(_, f)| *f)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .trim_end_matches(".rs");
    (first != "lib").then(|| first.to_string())
}

/// The code of a file without comments (line comments and doc comments).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
}

/// Every `crate::x` (or `ccma::x` in `main.rs`) the line names: the top-level module `x`.
fn crate_paths(line: &str, prefix: &str) -> Vec<String> {
    line.match_indices(prefix)
        .filter(|(i, _)| !line[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
        .map(|(i, _)| {
            line[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn sources() -> (PathBuf, Vec<PathBuf>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    (src, files)
}

#[test]
fn every_module_imports_only_from_lower_floors() {
    let (src, files) = sources();
    let floors = floors();
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let own =
            floor(&floors, &module).unwrap_or_else(|| panic!("{module} is not in the floor list"));
        let prefix = if module == "main" {
            "ccma::"
        } else {
            "crate::"
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in code_lines(&text) {
            for used in crate_paths(line, prefix) {
                if used == module || used == "UsageError" {
                    continue;
                }
                match floor(&floors, &used) {
                    Some(f) if f < own => {}
                    _ => violations.push(format!(
                        "{}:{n}: {module} (floor {own}) uses {used}",
                        file.display()
                    )),
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn only_the_command_line_knows_clap_and_flags() {
    let (src, files) = sources();
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if matches!(module.as_deref(), Some("cli") | Some("main")) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in code_lines(&text) {
            let flag = line
                .match_indices("--")
                .any(|(i, _)| line[i + 2..].starts_with(|c: char| c.is_ascii_lowercase()));
            if line.contains("clap") || flag {
                violations.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// Within one folder, the files' references to each other (`super::x`, `crate::module::x`) form
/// no cycle.
#[test]
fn no_import_cycle_between_the_files_of_a_folder() {
    let (src, files) = sources();
    let mut cycles = Vec::new();
    for dir in files
        .iter()
        .filter_map(|f| f.parent())
        .filter(|d| *d != src)
    {
        let module = dir.file_name().unwrap().to_str().unwrap();
        let siblings: Vec<&PathBuf> = files.iter().filter(|f| f.parent() == Some(dir)).collect();
        let stem = |f: &Path| f.file_stem().unwrap().to_str().unwrap().to_string();
        let names: Vec<String> = siblings
            .iter()
            .map(|f| stem(f))
            .filter(|n| n != "mod")
            .collect();
        let edges: Vec<(String, Vec<String>)> = siblings
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                let own = format!("crate::{module}::");
                let mut to: Vec<String> = code_lines(&text)
                    .flat_map(|(_, l)| {
                        let mut v = crate_paths(l, "super::");
                        v.extend(crate_paths(l, &own));
                        v
                    })
                    .filter(|n| names.contains(n) && *n != stem(f))
                    .collect();
                to.sort();
                to.dedup();
                (stem(f), to)
            })
            .collect();
        // Depth-first search from every file; a node met again on the current path is a cycle.
        fn visit(
            n: &str,
            edges: &[(String, Vec<String>)],
            path: &mut Vec<String>,
            out: &mut Vec<String>,
        ) {
            if let Some(i) = path.iter().position(|p| p == n) {
                out.push(path[i..].join(" -> ") + " -> " + n);
                return;
            }
            path.push(n.to_string());
            for (_, to) in edges.iter().filter(|(f, _)| f == n) {
                for t in to {
                    visit(t, edges, path, out);
                }
            }
            path.pop();
        }
        for (f, _) in &edges {
            visit(f, &edges, &mut Vec::new(), &mut cycles);
        }
    }
    cycles.dedup();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_a_violation() {
    assert_eq!(
        crate_paths("use crate::train::x; crate::io::y()", "crate::"),
        ["train", "io"]
    );
    assert!(crate_paths("my_crate::train", "crate::").is_empty());
    let (line, _) = ("x // crate::train", 0);
    assert!(code_lines(line).all(|(_, l)| crate_paths(l, "crate::").is_empty()));
}

/// CONTRIBUTING.md's table of the code's layout names the floors of `src/lib.rs`, in its order.
#[test]
fn the_layout_table_of_contributing_is_lib_rs_floor_table() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("CONTRIBUTING.md"))
            .unwrap();
    let section = text
        .split("## How the code is laid out")
        .nth(1)
        .expect("CONTRIBUTING.md has the section")
        .split("\n## ")
        .next()
        .unwrap();
    let listed: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `src/"))
        .flat_map(|row| cell_modules(&format!("`src/{}", row.split(" | ").next().unwrap())))
        .collect();
    let modules: Vec<String> = floors().into_iter().map(|(m, _)| m).collect();
    assert_eq!(listed, modules);
}
