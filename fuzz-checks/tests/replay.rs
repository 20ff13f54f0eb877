//! Replays every committed fuzz input on stable, as an ordinary test: each
//! file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes
//! through the same check the fuzz target runs, with the same counting
//! allocator. A target without a corpus directory fails, so a new target
//! cannot be forgotten; so does a directory or a `fuzz_targets/` file that
//! names no target.

use std::{
    collections::BTreeSet,
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use hasivu_fuzz_checks::{Allocator, Check, TARGET_NAMES};

#[global_allocator]
static ALLOCATOR: Allocator = Allocator::system();

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// The names of the subdirectories (or, with `ext`, of the files with that
/// extension) of `dir`.
fn names(dir: &Path, ext: Option<&str>) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| match ext {
            None => path.is_dir(),
            Some(ext) => path.extension().is_some_and(|e| e == ext),
        })
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Runs every corpus and regression input of `target` through `check`;
/// fails naming each input that broke an invariant.
fn replay(target: &str, check: Check) {
    assert!(
        Allocator::is_installed(),
        "the counting allocator is not installed"
    );
    let corpus = fuzz_dir().join("corpus").join(target);
    let inputs = files(&corpus);
    assert!(
        !inputs.is_empty(),
        "fuzz target {target} has no corpus: add seeds to {}",
        corpus.display()
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for input in inputs.iter().chain(&regressions) {
        let data = fs::read(input).expect("a readable input");
        // Printed first: a stack overflow aborts before any report.
        eprintln!("{target}: {} ({} bytes)", input.display(), data.len());
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(input.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs broke an invariant (messages above):\n{}",
        failed.len(),
        inputs.len() + regressions.len(),
        failed.join("\n")
    );
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target), hasivu_fuzz_checks::$target);
            }
        )*

        /// Every target built here has a test above.
        #[test]
        fn every_built_target_is_replayed() {
            #[allow(unused_mut)]
            let mut tested: BTreeSet<&str> = [$(stringify!($target)),*].into_iter().collect();
            #[cfg(feature = "api")]
            tested.insert("api_config");
            for (name, _) in hasivu_fuzz_checks::targets() {
                assert!(tested.contains(name), "no replay test for {name}");
            }
        }
    };
}

replay_tests!(
    compress_negotiate,
    compress_fields,
    compress_prune,
    compress_decode,
    shield_sqli,
    shield_xss,
    shield_traversal,
    shield_decode,
    shield_agents,
    shield_inspection,
    client_ip,
    cidr,
    quota,
    duration,
    cache_pattern,
    cache_key,
    cache_headers,
    metrics_labels,
);

#[cfg(feature = "api")]
#[test]
fn api_config() {
    replay("api_config", hasivu_fuzz_checks::api_config);
}

/// Targets, corpus directories, regression directories and
/// `fuzz/fuzz_targets/*.rs` name the same set.
#[test]
fn targets_corpora_and_fuzz_targets_agree() {
    let targets: BTreeSet<String> = TARGET_NAMES.iter().map(|t| (*t).to_owned()).collect();
    let fuzz = fuzz_dir();
    let corpora = names(&fuzz.join("corpus"), None);
    assert_eq!(corpora, targets, "fuzz/corpus/ and the targets differ");
    let binaries = names(&fuzz.join("fuzz_targets"), Some("rs"));
    assert_eq!(
        binaries, targets,
        "fuzz/fuzz_targets/ and the targets differ"
    );
    let regressions = names(&fuzz.join("regressions"), None);
    assert!(
        regressions.is_subset(&targets),
        "fuzz/regressions/ names unknown targets: {:?}",
        regressions.difference(&targets).collect::<Vec<_>>()
    );
    for (name, _) in hasivu_fuzz_checks::targets() {
        assert!(targets.contains(name));
    }
}
