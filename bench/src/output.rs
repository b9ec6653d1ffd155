//! Writes a scenario's results: JSON with every report, a Markdown table with ratios to
//! corecast, and an SVG bar chart (plotters). Not the measuring.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use corecast_load::Report;
use plotters::prelude::*;
use serde::Serialize;

/// One peer's outcome in a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub peer: String,
    pub report: Option<Report>,
    pub error: Option<String>,
}

/// Everything written for one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub id: String,
    pub title: String,
    pub metric: String,
    pub higher_is_better: bool,
    pub machine: serde_json::Value,
    pub parameters: serde_json::Value,
    pub outcomes: Vec<Outcome>,
}

/// The headline number of a report for a scenario id.
pub fn headline(id: &str, r: &Report) -> Option<f64> {
    if id.starts_with("echo") {
        r.round_trips_per_second
    } else if id.starts_with("idle") || id.starts_with("subs") {
        r.server.as_ref()?.rss_per_connection_bytes
    } else if id.starts_with("shootout") {
        r.shootout_max_clients.map(|c| c as f64)
    } else {
        Some(r.deliveries_per_second)
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        corecast_load::report::thousands(v)
    } else {
        format!("{v:.2}")
    }
}

/// The Markdown table.
pub fn markdown(res: &ScenarioResult) -> String {
    let base = res
        .outcomes
        .iter()
        .find(|o| o.peer == "corecast")
        .and_then(|o| o.report.as_ref())
        .and_then(|r| headline(&res.id, r));
    let mut md = format!("### {}\n\n", res.title);
    md += &format!("| server | {} | corecast ÷ server | p99 latency | server CPU-µs per delivery | exact delivery |\n", res.metric);
    md += "|---|---:|---:|---:|---:|---|\n";
    for o in &res.outcomes {
        let Some(r) = &o.report else {
            let _ = writeln!(
                md,
                "| {} | failed: {} | | | | |",
                o.peer,
                o.error.as_deref().unwrap_or("?")
            );
            continue;
        };
        let v = headline(&res.id, r);
        let ratio = match (base, v) {
            (Some(b), Some(v)) if v > 0.0 && b > 0.0 => {
                let x = if res.higher_is_better { b / v } else { v / b };
                format!("{x:.2}×")
            }
            _ => "–".into(),
        };
        let p99 = r
            .broadcast_latency
            .as_ref()
            .filter(|l| l.count > 0)
            .or(Some(&r.latency))
            .filter(|l| l.count > 0)
            .map(|l| format!("{:.1} ms", l.p99_us as f64 / 1000.0))
            .or_else(|| {
                r.shootout_steps
                    .last()
                    .map(|s| format!("{:.1} ms (p95, last step)", s.rtt.p95_us as f64 / 1000.0))
            })
            .unwrap_or_else(|| "–".into());
        let cpu = r
            .server
            .as_ref()
            .and_then(|s| s.cpu_us_per_delivery)
            .map(|c| format!("{c:.2}"))
            .unwrap_or_else(|| "–".into());
        let exact = if r.ok {
            "yes".to_string()
        } else {
            format!("no ({} faults)", r.fault_count)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            o.peer,
            v.map(fmt_num).unwrap_or_else(|| "–".into()),
            ratio,
            p99,
            cpu,
            exact
        );
    }
    md += &format!(
        "\n{} Ratios above 1 favour corecast.\n",
        if res.higher_is_better {
            "Higher is better."
        } else {
            "Lower is better."
        }
    );
    md
}

/// Memory per subscription, per server: the `subs` run's server bytes per connection less the
/// `idle` run's, times connections, over subscriptions. Both runs hold the same number of
/// connections, so what is left is what the subscriptions cost.
pub fn subscription_memory(idle: &ScenarioResult, subs: &ScenarioResult) -> String {
    fn per_conn<'a>(res: &'a ScenarioResult, peer: &str) -> Option<(f64, &'a Report)> {
        res.outcomes
            .iter()
            .find(|o| o.peer == peer)
            .and_then(|o| o.report.as_ref())
            .and_then(|r| Some((r.server.as_ref()?.rss_per_connection_bytes?, r)))
    }
    let mut md = String::from("### Server memory per subscription\n\n");
    md += "| server | bytes per subscription | corecast ÷ server |\n";
    md += "|---|---:|---:|\n";
    let cost = |peer: &str| -> Option<f64> {
        let (base, _) = per_conn(idle, peer)?;
        let (with, r) = per_conn(subs, peer)?;
        let subscriptions = r.subscriptions? as f64;
        Some((with - base) * r.clients as f64 / subscriptions.max(1.0))
    };
    let ours = cost("corecast");
    for o in &subs.outcomes {
        let Some(c) = cost(&o.peer) else {
            let _ = writeln!(md, "| {} | – | – |", o.peer);
            continue;
        };
        let ratio = match ours {
            Some(b) if b > 0.0 && c > 0.0 => format!("{:.2}×", c / b),
            _ => "–".into(),
        };
        let _ = writeln!(md, "| {} | {} | {} |", o.peer, fmt_num(c), ratio);
    }
    md += "\nLower is better. Ratios above 1 favour corecast.\n";
    md
}

/// A bar chart of the headline metric.
pub fn chart(res: &ScenarioResult, path: &Path) -> anyhow::Result<()> {
    let bars: Vec<(String, f64)> = res
        .outcomes
        .iter()
        .filter_map(|o| Some((o.peer.clone(), headline(&res.id, o.report.as_ref()?)?)))
        .collect();
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&res.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d((0..bars.len().saturating_sub(1)).into_segmented(), 0.0..max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_desc(res.metric.as_str())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|v| fmt_num(*v))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (name, v))| {
        let color = if name == "corecast" {
            RGBColor(214, 80, 40)
        } else {
            RGBColor(90, 110, 140)
        };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *v),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 18, 18);
        bar
    }))?;
    root.present().context("writing the chart")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_memory_is_a_table_not_a_code_block() {
        let result = |id: &str| ScenarioResult {
            id: id.into(),
            title: id.into(),
            metric: "server bytes per connection".into(),
            higher_is_better: false,
            machine: serde_json::Value::Null,
            parameters: serde_json::Value::Null,
            outcomes: vec![Outcome {
                peer: "corecast".into(),
                report: None,
                error: Some("not run".into()),
            }],
        };
        let md = subscription_memory(&result("idle-10k"), &result("subs-100k"));
        assert!(
            md.lines().all(|l| !l.starts_with([' ', '\t'])),
            "an indented line renders as code:\n{md}"
        );
        assert!(
            md.contains("\n\n| server | bytes per subscription | corecast ÷ server |\n|---|"),
            "{md}"
        );
    }
}
