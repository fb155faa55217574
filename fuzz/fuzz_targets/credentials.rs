#![no_main]
// The body lives in muster-fuzzing so that stable tests replay this target's corpus.
libfuzzer_sys::fuzz_target!(|data: &[u8]| muster_fuzzing::credentials(data));
