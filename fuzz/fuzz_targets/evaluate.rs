//! Structured arbitrary policy + observations -> decisions, invariants asserted.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vllm_scaling_core::fuzzing::evaluate(data);
});
