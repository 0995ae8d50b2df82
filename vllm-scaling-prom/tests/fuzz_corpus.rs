//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/exposition_parse`) through the
//! same checks the fuzz target runs.

use std::path::Path;

#[test]
fn exposition_parse_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/exposition_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable corpus entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        vllm_scaling_prom::fuzzing::exposition_parse(&data);
        n += 1;
    }
    assert!(n >= 5, "only {n} corpus entries in {}", dir.display());
}
