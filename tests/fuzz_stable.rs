//! The fuzz targets' properties (`fuzz/src/checks.rs`) run on stable: the seed corpus in
//! `fuzz/corpus/`, then bounded numbers of seeded random mutations of it and of random bytes.
//! Not a replacement for `cargo fuzz` (no coverage guidance), but the same checks on every
//! CI run. `CORECAST_FUZZ_SEED` picks another sequence; a failure prints the seed and input.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Inputs tried per target.
const CASES: usize = 20_000;

/// xorshift64*: deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("seed file"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// One to eight edits of the kinds that find parser bugs: bit flips, interesting bytes,
/// insertions, deletions, repeats, splices from another seed, truncation.
fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    const INTERESTING: [u8; 8] = [0x00, 0x7e, 0x7f, 0x80, 0xff, b'\r', b'\n', b'%'];
    let mut out = input.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 if at < out.len() => out[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => {
                let extra: Vec<u8> = (0..rng.below(16) + 1).map(|_| rng.byte()).collect();
                out.splice(at..at, extra);
            }
            3 if at < out.len() => {
                let end = (at + rng.below(32) + 1).min(out.len());
                out.drain(at..end);
            }
            4 if at < out.len() => {
                let end = (at + rng.below(16) + 1).min(out.len());
                let piece = out[at..end].to_vec();
                for _ in 0..rng.below(4) + 1 {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let piece = other[from..(from + rng.below(64)).min(other.len())].to_vec();
                out.splice(at..at, piece);
            }
            _ => out.truncate(at),
        }
    }
    out
}

fn seed() -> u64 {
    std::env::var("CORECAST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de_cafe_f00d_u64)
}

/// The seeds, then `CASES` inputs: four in five mutated seeds, one in five random bytes.
fn inputs(target: &str) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed() | 1);
    let corpus = seeds(target);
    let mut inputs: Vec<Vec<u8>> = corpus.clone();
    for i in 0..CASES {
        inputs.push(if i % 5 == 4 {
            (0..rng.below(300)).map(|_| rng.byte()).collect()
        } else {
            let base = &corpus[rng.below(corpus.len())];
            mutate(&mut rng, base, &corpus)
        });
    }
    inputs
}

fn run(target: &str, check: fn(&[u8])) {
    for input in inputs(target) {
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            panic!(
                "{target}: check failed (CORECAST_FUZZ_SEED={}) on input {input:02x?}",
                seed()
            );
        }
    }
}

#[test]
fn frame_decoder_properties_hold_on_mutated_input() {
    run("frames", checks::frames);
}

#[test]
fn request_head_parser_properties_hold_on_mutated_input() {
    run("request_head", checks::request_head);
}

#[test]
fn close_frame_properties_hold_on_mutated_input() {
    run("close_frame", checks::close_frame);
}

#[test]
fn the_inputs_reach_every_outcome() {
    // Mutations that only ever produced garbage would test one error path: the generated
    // frame inputs must reach whole messages and each of the three close codes.
    use corecast::ws::frame::{Decoder, Inbound};
    let (mut messages, mut codes) = (0, std::collections::BTreeSet::new());
    for input in inputs("frames") {
        let [mode, _, rest @ ..] = &input[..] else {
            continue;
        };
        let limit = [125, 1024, 64 * 1024][usize::from(*mode % 3)];
        let mut items = Vec::new();
        match Decoder::new(limit).feed(rest, &mut items) {
            Ok(()) => {}
            Err(e) => {
                codes.insert(e.close_code());
            }
        }
        messages += items
            .iter()
            .filter(|i| matches!(i, Inbound::Message { .. }))
            .count();
    }
    assert!(messages > 100, "only {messages} whole messages decoded");
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), [1002, 1007, 1009]);
}
