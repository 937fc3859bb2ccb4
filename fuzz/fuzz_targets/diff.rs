#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qcc_fuzz::diff(data));
