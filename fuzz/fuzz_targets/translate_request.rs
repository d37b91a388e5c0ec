#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_fuzzing::translate::request_target(data));
