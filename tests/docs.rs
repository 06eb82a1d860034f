//! The docs stay true where a fact can be checked: every link between files
//! resolves inside the repository, nothing points outside it, every test a page
//! cites as evidence exists, and README.md stays a short front door. (The
//! configuration keys and the metrics are checked against their tables by the unit
//! tests of `src/config/mod.rs` and `src/metrics.rs`.)

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's own text files: not `target/`, `.git/` or the vendored crates.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "vendor") {
                files(&path, out);
            }
        } else if std::fs::read_to_string(&path).is_ok() {
            out.push(path);
        }
    }
}

fn markdown() -> Vec<PathBuf> {
    let mut all = Vec::new();
    files(&repo(), &mut all);
    all.retain(|p| p.extension().is_some_and(|e| e == "md"));
    all
}

/// `[text](target)` links in a markdown file, without their `#anchor`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("").trim();
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_owned());
        }
        rest = &rest[end..];
    }
    out
}

#[test]
fn every_link_resolves_inside_the_repository() {
    let root = repo().canonicalize().unwrap();
    let mut broken = Vec::new();
    for file in markdown() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&text) {
            let target = file.parent().unwrap().join(&link);
            match target.canonicalize() {
                Ok(t) if t.starts_with(&root) => {}
                Ok(_) => broken.push(format!("{}: {link} leaves the repository", file.display())),
                Err(_) => broken.push(format!("{}: {link} does not exist", file.display())),
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn nothing_points_outside_the_repository() {
    // Spelled in two pieces so that this file does not match itself.
    let outside = ["../", "shared"].concat();
    let mut all = Vec::new();
    files(&repo(), &mut all);
    let offenders: Vec<String> = all
        .iter()
        .filter(|p| std::fs::read_to_string(p).unwrap().contains(&outside))
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "files referring outside the repository: {offenders:?}"
    );
}

#[test]
fn every_cited_test_exists() {
    let mut missing = Vec::new();
    let mut cited = 0;
    for file in markdown() {
        let text = std::fs::read_to_string(&file).unwrap();
        // `path/to/file.rs::test_name`
        for quoted in text.split('`').skip(1).step_by(2) {
            let Some((path, name)) = quoted.split_once(".rs::") else {
                continue;
            };
            cited += 1;
            let source = std::fs::read_to_string(repo().join(format!("{path}.rs")));
            let found = source.is_ok_and(|s| s.contains(&format!("fn {name}(")));
            if !found {
                missing.push(format!("{}: {quoted}", file.display()));
            }
        }
    }
    assert!(
        cited > 20,
        "expected the docs to cite their tests, found {cited}"
    );
    assert!(
        missing.is_empty(),
        "cited tests that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_cited_source_file_exists() {
    let mut missing = Vec::new();
    for file in markdown() {
        let text = std::fs::read_to_string(&file).unwrap();
        for quoted in text.split('`').skip(1).step_by(2) {
            let path = quoted.split("::").next().unwrap_or(quoted);
            let cited = [
                "src/",
                "tests/",
                "migrations/",
                "benches/",
                "deploy/",
                "scripts/",
            ]
            .iter()
            .any(|dir| path.starts_with(dir));
            if cited && !path.contains(['*', '<', ' ', '\n']) && !repo().join(path).exists() {
                missing.push(format!("{}: {path}", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited paths that do not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_is_a_short_front_door() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.len() < 8 * 1024,
        "README.md is {} bytes; move detail into docs/",
        readme.len()
    );
    for command in ["make demo", "make test"] {
        assert!(readme.contains(command), "README.md lacks `{command}`");
    }
    assert!(readme.contains("docs/"), "README.md must lead into docs/");
}
