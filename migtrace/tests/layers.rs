//! The floors of `migtrace/src` stay true: every `crate::` path in a module names its own
//! floor or one below, as `docs/architecture.md` lists them between `<!-- layers -->` and
//! `<!-- /layers -->` (one floor per line, lowest first). A top-level module missing from
//! the list fails too, so a new module is placed on a floor when it is added.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Module name -> floor, from the architecture document.
fn floors() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("../docs/architecture.md")).unwrap();
    let start = doc
        .find("<!-- layers -->")
        .expect("docs/architecture.md has <!-- layers -->");
    let end = doc.find("<!-- /layers -->").expect("and <!-- /layers -->");
    let block = &doc[start..end];
    let mut out = BTreeMap::new();
    let lines = block.lines().skip(1).filter(|l| !l.starts_with("```"));
    for (i, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        for m in line.split_whitespace() {
            assert!(
                out.insert(m.to_string(), i).is_none(),
                "{m} is listed twice"
            );
        }
    }
    assert!(out.len() > 5, "too few modules in the layer list: {out:?}");
    out
}

/// The source without comments and string literals, so prose and messages that mention
/// `crate::x` do not count.
fn code_only(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        break;
                    }
                }
                out.push('"');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules a file names: `crate::a::...` and, in `use crate::{a::.., b}`,
/// each first name inside the braces.
fn uses(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            let (mut depth, mut first) = (1, true);
            let mut k = 0;
            let b = inner.as_bytes();
            while depth > 0 && k < b.len() {
                match b[k] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    b',' if depth == 1 => first = true,
                    c if depth == 1 && first && (c.is_ascii_alphabetic() || c == b'_') => {
                        let w = ident(&inner[k..]);
                        k += w.len();
                        out.insert(w);
                        first = false;
                        continue;
                    }
                    _ => {}
                }
                k += 1;
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_a_higher_floor() {
    let floors = floors();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(&mine) = floors.get(&top) else {
            wrong.push(format!(
                "{}: module {top} is on no floor of docs/architecture.md",
                rel.display()
            ));
            continue;
        };
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for m in uses(&code) {
            match floors.get(&m) {
                Some(&theirs) if theirs > mine => wrong.push(format!(
                    "{}: {top} (floor {mine}) imports {m} (floor {theirs})",
                    rel.display()
                )),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "layer violations:\n{}", wrong.join("\n"));
}

/// The checker itself finds what it must: a plain path, a path in braces, and nothing in a
/// comment or a string.
#[test]
fn the_checker_sees_paths_and_skips_prose() {
    let code = code_only(
        "use crate::{model::sim, units, sink::{a, b}};\nlet x = crate::watcher::run();\n// crate::cli\nlet s = \"crate::commands\";",
    );
    let got: Vec<_> = uses(&code).into_iter().collect();
    assert_eq!(got, ["model", "sink", "units", "watcher"]);
}
