//! The image's build context is complete, proven without a Docker daemon: the build
//! stage of `Dockerfile` is replayed in an empty directory. Its `COPY` lines copy
//! exactly what they name from the repository (minus what `.dockerignore` leaves
//! out of the context), and its `RUN` lines run as written, with `cargo build
//! --release` checked instead of built (`cargo check --offline`: the same inputs,
//! minutes less) and the final `strip` left out. A file Cargo needs that the image
//! does not copy fails here, not at release time.

use std::path::{Path, PathBuf};
use std::process::Command;

const BUILD: &str = "cargo build --release --locked";
const CHECK: &str = "cargo check --locked --offline";
const STRIP: &str = "&& strip target/release/evrelay";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One instruction of the build stage.
#[derive(Debug)]
enum Step {
    /// Sources (repository paths) and the destination (relative to WORKDIR).
    Copy(Vec<String>, String),
    Run(String),
}

/// The instructions of the first stage, continuation lines joined, and its image.
fn build_stage(dockerfile: &str) -> (String, Vec<Step>) {
    let joined = dockerfile.replace("\\\n", " ");
    let mut image = None;
    let mut steps = Vec::new();
    for line in joined.lines().map(str::trim) {
        let Some((instruction, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        match instruction {
            "FROM" if image.is_some() => break,
            "FROM" => image = Some(rest.split_whitespace().next().unwrap().to_owned()),
            "WORKDIR" => assert_eq!(rest.trim(), "/src", "the test replays WORKDIR /src"),
            "COPY" => {
                let mut parts: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
                assert!(!parts[0].starts_with("--"), "unexpected COPY flag: {line}");
                let dest = parts.pop().expect("a destination");
                steps.push(Step::Copy(parts, dest));
            }
            "RUN" => steps.push(Step::Run(rest.trim().to_owned())),
            _ => {}
        }
    }
    (image.expect("a FROM line"), steps)
}

/// `.dockerignore` patterns: `*` matches within one path element; a pattern that
/// matches a directory leaves out everything under it.
fn ignored(patterns: &[String], rel: &Path) -> bool {
    let rel = rel.to_string_lossy();
    let parts: Vec<&str> = rel.split('/').collect();
    (1..=parts.len()).any(|n| {
        let prefix = parts[..n].join("/");
        patterns
            .iter()
            .any(|p| glob(p.trim_end_matches('/'), &prefix))
    })
}

fn glob(pattern: &str, path: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), path.chars().collect());
    fn m(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != '/')
                .any(|i| m(&p[1..], &s[i..])),
            Some(c) => s.first() == Some(c) && m(&p[1..], &s[1..]),
        }
    }
    m(&p, &s)
}

fn copy(patterns: &[String], from: &Path, rel: &Path, to: &Path) {
    if ignored(patterns, rel) {
        return;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let name = entry.unwrap().file_name();
            copy(
                patterns,
                &from.join(&name),
                &rel.join(&name),
                &to.join(&name),
            );
        }
    } else {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
    }
}

/// `1.89` and `1.89.0` alike, as (major, minor, patch).
fn version(v: &str) -> [u32; 3] {
    let mut out = [0; 3];
    for (slot, n) in out.iter_mut().zip(v.split('.')) {
        *slot = n.parse().unwrap_or(0);
    }
    out
}

#[test]
fn the_dockerfile_context_holds_everything_cargo_needs() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let patterns: Vec<String> = std::fs::read_to_string(repo().join(".dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let (image, steps) = build_stage(&dockerfile);

    // The image's toolchain is new enough for every locked package.
    let toolchain = image
        .strip_prefix("rust:")
        .and_then(|t| t.split('-').next())
        .unwrap_or_else(|| panic!("the build stage is not a rust image: {image}"));
    let metadata = Command::new(env!("CARGO"))
        // Not --offline: metadata reads every package of the lock file, those of
        // other platforms too, which a build on this one never downloaded (a
        // fresh machine has none of them).
        .args(["metadata", "--locked", "--format-version", "1"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    for package in metadata["packages"].as_array().unwrap() {
        if let Some(needs) = package["rust_version"].as_str() {
            assert!(
                version(toolchain) >= version(needs),
                "{image} is older than {} needs (rust {needs})",
                package["name"]
            );
        }
    }

    let work = tempfile::tempdir().unwrap();
    let ctx = work.path();
    let mut replaced = (0, 0);
    for step in &steps {
        match step {
            Step::Copy(sources, dest) => {
                let dest = ctx.join(dest.trim_start_matches("./"));
                for source in sources {
                    let from = repo().join(source);
                    assert!(from.exists(), "COPY {source}: not in the repository");
                    let to = if sources.len() > 1 || dest.to_string_lossy().ends_with('/') {
                        dest.join(Path::new(source).file_name().unwrap())
                    } else {
                        dest.clone()
                    };
                    copy(&patterns, &from, Path::new(source), &to);
                }
            }
            Step::Run(command) => {
                replaced.0 += command.matches(BUILD).count();
                replaced.1 += command.matches(STRIP).count();
                let command = command.replace(BUILD, CHECK).replace(STRIP, "");
                let out = Command::new("sh")
                    .args(["-ec", &command])
                    .current_dir(ctx)
                    // Dependencies stay checked between runs, outside the context.
                    .env("CARGO_TARGET_DIR", repo().join("target/dockerfile-context"))
                    .env("CARGO_TERM_COLOR", "never")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "RUN {command}\nfailed in a context holding only what the Dockerfile copies:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert_eq!(
        replaced.0, 2,
        "expected two `{BUILD}` steps (dependencies, then the binary)"
    );
    assert_eq!(
        replaced.1, 1,
        "the binary must be stripped in the image (`{STRIP}`)"
    );
    assert!(
        dockerfile.contains("COPY --from=build /src/target/release/evrelay /usr/local/bin/evrelay"),
        "the runtime stage copies the binary from the build stage"
    );
}

#[test]
fn dockerignore_patterns_match_as_docker_does() {
    let p = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert!(ignored(&p(&["*.md"]), Path::new("README.md")));
    assert!(!ignored(&p(&["*.md"]), Path::new("vendor/README.md")));
    assert!(ignored(&p(&["target"]), Path::new("target/debug/x")));
    assert!(!ignored(&p(&["tests"]), Path::new("src/tests.rs")));
}
