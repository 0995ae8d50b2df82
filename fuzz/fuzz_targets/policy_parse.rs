//! Bytes -> YAML/JSON -> validated policy; never panics, round-trips through JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vllm_scaling_core::fuzzing::policy_parse(data);
});
