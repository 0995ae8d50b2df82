//! Replays the committed cargo-fuzz corpora (`fuzz/corpus/*`) through the same entry
//! points the fuzz targets call, so every input that ever mattered keeps being checked.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        run(&data);
        n += 1;
    }
    n
}

#[test]
fn policy_parse_corpus() {
    assert!(replay("policy_parse", vllm_scaling_core::fuzzing::policy_parse) > 0, "empty corpus");
}

#[test]
fn evaluate_corpus() {
    assert!(replay("evaluate", vllm_scaling_core::fuzzing::evaluate) > 0, "empty corpus");
}
