//! libFuzzer target: `corecast_fuzz::checks::frames` on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecast_fuzz::checks::frames(data));
