//! A short run of every fuzz target: each committed corpus file through its target's body,
//! as `cargo fuzz run` would feed it, without libFuzzer.

use std::path::{Path, PathBuf};

use flext_testing::fuzz::TARGETS;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus of {target} ({}) reads: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a corpus entry reads").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_replays_its_committed_corpus() {
    let mut failures = Vec::new();
    for (target, body) in TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "the corpus of {target} is empty");
        for file in &files {
            let data = std::fs::read(file).expect("a corpus file reads");
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                failures.push(format!(
                    "{target} fails on {} (reproduce: cargo fuzz run {target} {})",
                    file.display(),
                    file.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_target_has_a_libfuzzer_target_and_every_corpus_a_target() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (target, _) in TARGETS {
        let file = targets.join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{} reads: {e}", file.display()));
        assert!(
            source.contains(&format!("flext_testing::fuzz::{target}(")),
            "{} calls flext_testing::fuzz::{target}",
            file.display()
        );
    }
    for target in flext_testing::fuzz::STORE_TARGETS {
        let file = targets.join(format!("{target}.rs"));
        let source = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{} reads: {e}", file.display()));
        assert!(
            source.contains("flext_testing::fuzz::stored_row("),
            "{} calls flext_testing::fuzz::stored_row",
            file.display()
        );
        assert!(
            !corpus(target).is_empty(),
            "the corpus of {target} is empty"
        );
    }
    for entry in std::fs::read_dir(corpus_root()).expect("the corpus root reads") {
        let name = entry.expect("an entry reads").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(target, _)| *target == name)
                || flext_testing::fuzz::STORE_TARGETS.contains(&&*name),
            "fuzz/corpus/{name} belongs to no target of flext_testing::fuzz::TARGETS"
        );
    }
}
