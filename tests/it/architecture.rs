//! The crate arrows of the architecture (README, "Architecture"), checked against what the
//! manifests really declare: every dependency, development dependencies included, points only
//! where the layering allows.

use std::collections::{BTreeMap, BTreeSet};

/// Which workspace crates each crate may depend on. Tests of every crate may also use
/// `chat4all-testsupport`, which (like the benchmarks and the binary) may use anything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("chat4all-domain", &[]),
    ("chat4all-platform", &[]),
    (
        "chat4all-eventstore",
        &["chat4all-domain", "chat4all-platform"],
    ),
    (
        "chat4all-commands",
        &[
            "chat4all-domain",
            "chat4all-eventstore",
            "chat4all-platform",
        ],
    ),
    (
        "chat4all-relay",
        &["chat4all-eventstore", "chat4all-platform"],
    ),
    (
        "chat4all-projections",
        &[
            "chat4all-domain",
            "chat4all-eventstore",
            "chat4all-platform",
        ],
    ),
    (
        "chat4all-channels",
        &[
            "chat4all-domain",
            "chat4all-commands",
            "chat4all-eventstore",
            "chat4all-platform",
        ],
    ),
    (
        "chat4all-gateway",
        &[
            "chat4all-domain",
            "chat4all-commands",
            "chat4all-projections",
            "chat4all-channels",
            "chat4all-eventstore",
            "chat4all-platform",
        ],
    ),
    // The load tool speaks HTTP only.
    ("chat4all-load", &[]),
];
const ANYTHING: &[&str] = &["chat4all", "chat4all-bench", "chat4all-testsupport"];

fn workspace_dependencies() -> BTreeMap<String, Vec<(String, String)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut crates = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let dependencies = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["name"].as_str().unwrap().starts_with("chat4all"))
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_owned(),
                    d["kind"].as_str().unwrap_or("normal").to_owned(),
                )
            })
            .collect();
        crates.insert(name, dependencies);
    }
    crates
}

#[test]
fn every_crate_depends_only_where_the_layering_allows() {
    let crates = workspace_dependencies();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(name, to)| (*name, to.iter().copied().collect()))
        .collect();
    for name in crates.keys() {
        assert!(
            allowed.contains_key(name.as_str()) || ANYTHING.contains(&name.as_str()),
            "{name} is not in the architecture's table"
        );
    }
    let mut violations = Vec::new();
    for (name, dependencies) in &crates {
        let Some(may) = allowed.get(name.as_str()) else {
            continue;
        };
        for (dependency, kind) in dependencies {
            let ok = may.contains(dependency.as_str())
                // A crate's own tests may turn on its own features.
                || dependency == name
                || (kind == "dev" && dependency == "chat4all-testsupport");
            if !ok {
                violations.push(format!("{name} -> {dependency} ({kind})"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "arrows the layering forbids: {violations:?}"
    );
    // Nothing but the binary depends on the gateway (testsupport starts one for tests).
    for (name, dependencies) in &crates {
        if dependencies.iter().any(|(d, _)| d == "chat4all-gateway") {
            assert!(
                ["chat4all", "chat4all-bench", "chat4all-testsupport"].contains(&name.as_str()),
                "{name} depends on the gateway"
            );
        }
    }
}

#[test]
fn the_readme_draws_the_same_arrows() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (name, to) in ALLOWED {
        let folder = name.trim_start_matches("chat4all-");
        let folder = if folder == "load" { "loadtest" } else { folder };
        let line = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{folder}/`")))
            .unwrap_or_else(|| panic!("the README's architecture table has no row for {folder}/"));
        for dependency in *to {
            let short = dependency.trim_start_matches("chat4all-");
            assert!(
                line.contains(short),
                "the README's row for {folder}/ does not name {short}: {line}"
            );
        }
    }
}
