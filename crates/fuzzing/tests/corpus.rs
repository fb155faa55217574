//! Every committed fuzz input, replayed on stable: the seed corpus of each target
//! (`fuzz/corpus/<target>/`) and the inputs that once crashed it
//! (`fuzz/regressions/<target>/`). This is how CI runs the fuzz targets without
//! nightly; it fails when a target has no corpus, so it cannot pass by finding
//! nothing to run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use muster_fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files directly in `dir` (sorted), or none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_seed_corpus() {
    let fuzz = fuzz_dir();
    for (name, _) in TARGETS {
        let bin = fuzz.join("fuzz_targets").join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        assert!(
            text.contains(&format!("muster_fuzzing::{name}(")),
            "{} does not call muster_fuzzing::{name}",
            bin.display()
        );
        let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let corpus = files(&fuzz.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is missing or empty"
        );
    }
    for bin in files(&fuzz.join("fuzz_targets")) {
        let stem = bin.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            TARGETS.iter().any(|(name, _)| *name == stem),
            "fuzz target {stem} is not in muster_fuzzing::TARGETS"
        );
    }
    for kind in ["corpus", "regressions"] {
        for dir in std::fs::read_dir(fuzz.join(kind)).into_iter().flatten() {
            let dir = dir.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.iter().any(|(name, _)| *name == dir),
                "fuzz/{kind}/{dir} belongs to no target"
            );
        }
    }
}

#[test]
fn every_seed_and_regression_input_runs_clean() {
    let fuzz = fuzz_dir();
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in files(&fuzz.join(kind).join(name)) {
                let data = std::fs::read(&file).unwrap();
                replayed += 1;
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failures.push(file.display().to_string());
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs that fail their target: {failures:#?}"
    );
    assert!(replayed >= TARGETS.len(), "only {replayed} inputs replayed");
}
