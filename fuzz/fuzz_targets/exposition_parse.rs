//! Bytes -> text exposition parser; rejected pages name a real line, accepted pages
//! round-trip through the renderer, catalog extraction never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vllm_scaling_prom::fuzzing::exposition_parse(data);
});
