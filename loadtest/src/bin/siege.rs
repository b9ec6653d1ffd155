//! `corecast-siege`: runs the attack suite (or the soak) against the real `corecast` binary
//! and writes the results as Markdown and JSON. Exits 1 when a goal was missed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use corecast::units::parse_duration;
use corecast_load::siege::{self, attacks, server, soak};
use server::{Cpus, Limits};
use soak::SoakOptions;

#[derive(Parser)]
#[command(
    name = "corecast-siege",
    about = "Attacks and a soak against the corecast binary, with figures"
)]
struct Args {
    /// The server binary (default: `corecast` beside this program).
    #[arg(long, global = true, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Write the results to PREFIX.md and PREFIX.json.
    #[arg(long, global = true, value_name = "PREFIX")]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the attacks, each against a fresh server, while a healthy client measures.
    Attacks {
        /// Only these attacks (comma-separated names).
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        only: Vec<String>,
        /// How long the healthy client measures before each attack.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        baseline: Duration,
        /// Report the healthy client's latency ratio but do not fail on it (for shared,
        /// noisy machines); every other goal still counts.
        #[arg(long)]
        latency_advisory: bool,
    },
    /// A long mixed run (idle, churn, a topic feed, slow consumers), sampled into CSV and SVG.
    Soak(SoakOptions),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match args.server {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("this program has no folder")?
            .join("corecast"),
    };
    if !binary.is_file() {
        bail!("no server binary at {} (build it: cargo build --release -p corecast-bin, or pass --server)", binary.display());
    }
    let cpus = Cpus::split();
    server::pin_current_thread(&cpus.attackers)?;
    eprintln!(
        "server (and the healthy client) on CPUs {:?}, attackers and other load on {:?}",
        cpus.server, cpus.attackers
    );
    match args.command {
        Command::Soak(opts) => {
            let report = soak::run(&binary, &opts, &cpus, |line| eprintln!("{line}"))?;
            publish(args.out.as_deref(), &soak::markdown(&report), &report)?;
            if let Some(prefix) = &args.out {
                std::fs::write(prefix.with_extension("csv"), soak::csv(&report.samples))?;
                let title = format!("corecast soak, {:.0} minutes", report.duration_s / 60.0);
                soak::plot(&report.samples, &prefix.with_extension("svg"), &title)?;
            }
            if !report.judgement.failures.is_empty() {
                bail!("the soak failed: {}", report.judgement.failures.join("; "));
            }
            Ok(())
        }
        Command::Attacks {
            only,
            baseline,
            latency_advisory,
        } => {
            for name in &only {
                if !attacks::ALL.iter().any(|a| a.name == name) {
                    let names: Vec<_> = attacks::ALL.iter().map(|a| a.name).collect();
                    bail!("no attack {name:?}; the attacks are {}", names.join(", "));
                }
            }
            let chosen: Vec<_> = attacks::ALL
                .iter()
                .filter(|a| only.is_empty() || only.iter().any(|n| n == a.name))
                .collect();
            let mut results = Vec::new();
            for (i, attack) in chosen.iter().enumerate() {
                eprintln!(
                    "[{}/{}] {}: {}",
                    i + 1,
                    chosen.len(),
                    attack.name,
                    attack.what
                );
                let result = siege::run_attack(&binary, attack, baseline, &cpus, latency_advisory)?;
                let verdict = siege::verdict(&result.failures, &result.notes);
                eprintln!(
                    "      {}; healthy p99 {} → {} µs, lost {}; fds {} → {} → {}; {verdict}",
                    result.answers,
                    result.healthy_baseline_p99_us,
                    result.healthy_during_p99_us,
                    result.healthy_lost,
                    result.fds_before,
                    result.fds_peak,
                    result.fds_after
                );
                results.push(result);
            }
            let table = siege::markdown(&results, &Limits::SIEGE, &cpus);
            publish(args.out.as_deref(), &table, &results)?;
            let failed = results.iter().filter(|r| !r.passed()).count();
            if failed > 0 {
                bail!("{failed} of {} attacks missed a goal", results.len());
            }
            Ok(())
        }
    }
}

/// Prints the Markdown table and, with `--out PREFIX`, writes it to PREFIX.md and the full
/// results to PREFIX.json.
fn publish(out: Option<&Path>, table: &str, results: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{table}");
    if let Some(prefix) = out {
        std::fs::write(prefix.with_extension("md"), table)?;
        std::fs::write(
            prefix.with_extension("json"),
            serde_json::to_string_pretty(results)?,
        )?;
    }
    Ok(())
}
