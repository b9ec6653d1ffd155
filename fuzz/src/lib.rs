//! What the fuzz targets check. The same file is compiled into the stable randomized test
//! (`tests/fuzz_stable.rs`), so both runs hold the parsers to the same properties.

pub mod checks;
