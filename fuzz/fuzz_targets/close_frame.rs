//! libFuzzer target: `corecast_fuzz::checks::close_frame` on each input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecast_fuzz::checks::close_frame(data));
