//! libFuzzer target: `corecast_fuzz::checks::request_head` on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecast_fuzz::checks::request_head(data));
