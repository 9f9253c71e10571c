//! Replays the committed fuzz corpus (`fuzz/corpus/raft_step/*`) through the
//! same entry point as the fuzz target, so a regression fails `cargo test`.
//! Inputs that once found a bug live in `tests/regressions/` and are
//! replayed by name below.

use std::path::Path;

use concord_raft::harness::fuzz_check;

fn replay_dir(dir: &Path) -> usize {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => panic!("cannot read corpus {}: {e}", dir.display()),
    };
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(v) = fuzz_check(&data) {
            panic!(
                "corpus input {} fails: {v}\nreplay: cargo fuzz run -s none raft_step {}",
                path.display(),
                path.display()
            );
        }
    }
    files.len()
}

#[test]
fn fuzz_corpus_replays_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/raft_step");
    let n = replay_dir(&dir);
    assert!(
        n >= 20,
        "expected a seed corpus of a few dozen inputs, found {n}"
    );
}
