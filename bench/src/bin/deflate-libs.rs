//! `deflate-libs`: times the deflate libraries corecast could compress with, on JSON messages of
//! 64 B to 16 KiB, each message compressed and inflated on its own (no context takeover, as
//! corecast always negotiates). The figures behind `docs/compression.md`. Not a server
//! benchmark: `corecast-bench --only broadcast-deflate` measures the whole server.
//!
//! The corecast columns run the library's own path (`ws::deflate::compress_frame`, which
//! frames the message too, and `ws::inflate::inflate`); the others call each library the way
//! it is fastest to call for one message.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corecast::ws::frame::{self, OpCode};
use corecast::ws::{deflate, inflate};
use corecast::{Bytes, Deflate};
use corecast_load::report::thousands;
use libdeflater::{CompressionLvl, Compressor, Decompressor};

const SIZES: [usize; 5] = [64, 256, 1024, 4096, 16384];
/// Timed rounds per cell; the median round is reported.
const ROUNDS: usize = 5;
/// About how long one round runs.
const ROUND_TIME: Duration = Duration::from_millis(60);

fn main() -> Result<()> {
    println!(
        "deflate-libs: ns per message (bytes out), median of {ROUNDS} rounds; smaller is better"
    );
    let header = "| JSON size | corecast (flate2 + zlib-rs), level 1 | libdeflate, level 1 | miniz_oxide, level 1 | corecast, level 6 | libdeflate, level 6 |";
    println!("\n{header}\n|---:|---:|---:|---:|---:|---:|");
    for size in SIZES {
        let message = json_message(size);
        let cells = [
            corecast_compress(&message, 1)?,
            libdeflate_compress(&message, 1)?,
            miniz_compress(&message, 1),
            corecast_compress(&message, 6)?,
            libdeflate_compress(&message, 6)?,
        ];
        let cells: Vec<String> = cells
            .iter()
            .map(|(ns, out)| format!("{} ({} B)", thousands(*ns), thousands(*out as f64)))
            .collect();
        println!("| {} | {} |", label(size), cells.join(" | "));
    }

    println!("\n| JSON size | corecast inflate | libdeflate inflate |\n|---:|---:|---:|");
    for size in SIZES {
        let message = json_message(size);
        println!(
            "| {} | {} | {} |",
            label(size),
            thousands(corecast_inflate(&message)?),
            thousands(libdeflate_inflate(&message)?)
        );
    }
    Ok(())
}

/// `size` bytes of JSON: an array of trade-like records, filled field by field (so a 64-byte
/// message is most of one record), padded with spaces to the exact size.
fn json_message(size: usize) -> Vec<u8> {
    let mut out = String::from("[");
    let mut open = false;
    'fill: for i in 0u64.. {
        let fields = [
            format!(r#""id":{}"#, 100_000 + i * 7),
            format!(
                r#""sym":"{}""#,
                ["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD"][(i % 4) as usize]
            ),
            format!(
                r#""px":{}.{:02}"#,
                20_000 + (i * 37) % 5_000,
                (i * 13) % 100
            ),
            format!(r#""qty":{}"#, 1 + (i * 11) % 250),
            format!(r#""side":"{}""#, if i % 3 == 0 { "sell" } else { "buy" }),
            format!(r#""ts":{}"#, 1_764_720_000_000 + i * 17),
        ];
        for (n, field) in fields.iter().enumerate() {
            let lead = match (n, i) {
                (0, 0) => "{",
                (0, _) => ",{",
                _ => ",",
            };
            // Room for the field and for closing "}]" after it.
            if out.len() + lead.len() + field.len() + 2 > size {
                break 'fill;
            }
            out.push_str(lead);
            out.push_str(field);
            open = true;
        }
        out.push('}');
        open = false;
    }
    if open {
        out.push('}');
    }
    out.push(']');
    let pad = size.saturating_sub(out.len());
    out.insert_str(out.len() - 1, &" ".repeat(pad));
    out.into_bytes()
}

/// Runs `op` in rounds of about `ROUND_TIME` and returns the median round's ns per call.
fn time_per_call(mut op: impl FnMut()) -> f64 {
    // Calibrate: how many calls fill a round.
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < ROUND_TIME / 4 {
        op();
        calls += 1;
    }
    let per_round = (calls * 4).max(1);
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_round {
                op();
            }
            start.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn corecast_compress(message: &[u8], level: u32) -> Result<(f64, usize)> {
    let settings = Deflate { level, min_size: 0 };
    let out = compressed_payload(message, &settings)?.len();
    // corecast keeps the last few frames it compressed (a broadcast is compressed once per
    // shard); cycling through more distinct frames than it keeps makes every call compress.
    let frames: Vec<Bytes> = (0..16)
        .map(|_| frame::encode(OpCode::Text, message))
        .collect();
    let mut i = 0;
    let ns = time_per_call(|| {
        i = (i + 1) % frames.len();
        black_box(deflate::compress_frame(&frames[i], &settings, 15));
    });
    Ok((ns, out))
}

/// `message` deflated by libdeflate at `level`, with the compressor that did it.
fn libdeflate_deflate(message: &[u8], level: i32) -> Result<(Vec<u8>, Compressor)> {
    let level = CompressionLvl::new(level).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut c = Compressor::new(level);
    let mut out = vec![0u8; c.deflate_compress_bound(message.len())];
    let len = c
        .deflate_compress(message, &mut out)
        .map_err(|e| anyhow::anyhow!("libdeflate: {e:?}"))?;
    out.truncate(len);
    Ok((out, c))
}

fn libdeflate_compress(message: &[u8], level: i32) -> Result<(f64, usize)> {
    let (compressed, mut c) = libdeflate_deflate(message, level)?;
    let mut out = vec![0u8; c.deflate_compress_bound(message.len())];
    let ns = time_per_call(|| {
        black_box(c.deflate_compress(black_box(message), &mut out).ok());
    });
    Ok((ns, compressed.len()))
}

fn miniz_compress(message: &[u8], level: u8) -> (f64, usize) {
    let len = miniz_oxide::deflate::compress_to_vec(message, level).len();
    let ns = time_per_call(|| {
        black_box(miniz_oxide::deflate::compress_to_vec(
            black_box(message),
            level,
        ));
    });
    (ns, len)
}

/// The compressed payload corecast sends for `message` (frame header stripped); an error if
/// it would send it uncompressed.
fn compressed_payload(message: &[u8], settings: &Deflate) -> Result<Vec<u8>> {
    let sent = deflate::compress_frame(&frame::encode(OpCode::Text, message), settings, 15);
    let (&b0, &b1) = (
        sent.first().context("empty frame")?,
        sent.get(1).context("short frame")?,
    );
    if b0 & 0x40 == 0 {
        bail!("corecast sent {} bytes uncompressed", message.len());
    }
    let payload = sent
        .get(frame::header_len(b1, false)..)
        .context("short frame")?;
    Ok(payload.to_vec())
}

fn corecast_inflate(message: &[u8]) -> Result<f64> {
    let settings = Deflate {
        level: 1,
        min_size: 0,
    };
    let payload = compressed_payload(message, &settings)?;
    if inflate::inflate(&payload, usize::MAX).ok().as_deref() != Some(message) {
        bail!("corecast does not inflate its own {} bytes", message.len());
    }
    Ok(time_per_call(|| {
        black_box(inflate::inflate(black_box(&payload), 1 << 20).ok());
    }))
}

fn libdeflate_inflate(message: &[u8]) -> Result<f64> {
    let (compressed, _) = libdeflate_deflate(message, 1)?;
    let mut d = Decompressor::new();
    // libdeflate inflates into a buffer sized up front: the whole message must fit.
    let mut out = vec![0u8; message.len()];
    Ok(time_per_call(|| {
        black_box(d.deflate_decompress(black_box(&compressed), &mut out).ok());
    }))
}

fn label(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

#[cfg(test)]
mod tests {
    use super::{json_message, SIZES};

    #[test]
    fn messages_are_json_of_the_exact_size() {
        for size in SIZES {
            let message = json_message(size);
            assert_eq!(message.len(), size);
            let parsed: serde_json::Value = serde_json::from_slice(&message).expect("JSON");
            let records = parsed.as_array().expect("an array");
            assert!(!records.is_empty(), "{size} B holds no record");
        }
    }
}
