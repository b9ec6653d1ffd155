//! Writes a scenario's results: JSON with every report, a Markdown table with ratios to
//! corecast, and an SVG bar chart (plotters). Not the measuring.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use corecast_load::Report;
use plotters::prelude::*;
use serde::Serialize;

use crate::idle::{KeepAlive, KernelMemory};

/// One peer's outcome in a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub peer: String,
    pub report: Option<Report>,
    pub error: Option<String>,
    /// Idle scenarios: the kernel's memory for the server's end of each connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelMemory>,
    /// Idle scenarios: the server's keep-alive CPU in its steady state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<KeepAlive>,
}

impl Outcome {
    /// A row whose server could not be run or measured.
    pub fn failed(peer: String, error: String) -> Outcome {
        Outcome {
            peer,
            report: None,
            error: Some(error),
            kernel: None,
            keepalive: None,
        }
    }
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
    /// A sentence under the table: what its rows are, when they are not plain servers.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    pub outcomes: Vec<Outcome>,
}

/// Whether a scenario's headline is the server's CPU per request (refused upgrades: the rate is
/// the generator's, the cost is the figure).
fn cpu_is_headline(id: &str) -> bool {
    id.starts_with("upgrades-refused") || id.ends_with("-paced")
}

/// What a scenario's server CPU is counted per.
fn cpu_unit(id: &str) -> &'static str {
    if id.starts_with("upgrades-refused") {
        "request"
    } else if id.starts_with("upgrades") {
        "upgrade"
    } else {
        "delivery"
    }
}

/// The headline number of a report for a scenario id.
pub fn headline(id: &str, r: &Report) -> Option<f64> {
    if cpu_is_headline(id) {
        r.server.as_ref()?.cpu_us_per_delivery
    } else if id.starts_with("echo") {
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

/// The Markdown table. Ratios are to the `corecast` row, oriented so that above 1 favours
/// corecast; a table without one (rows that are all corecast, run different ways) takes its
/// first row as the base and gives each row's figure ÷ the base's.
pub fn markdown(res: &ScenarioResult) -> String {
    let base_row = res
        .outcomes
        .iter()
        .find(|o| o.peer == "corecast")
        .or_else(|| res.outcomes.first());
    let base_name = base_row.map_or("corecast", |o| o.peer.as_str());
    let against_corecast = base_name == "corecast";
    let base = base_row
        .and_then(|o| o.report.as_ref())
        .and_then(|r| headline(&res.id, r));
    let upgrades = res.id.starts_with("upgrades");
    let ratio_name = if against_corecast {
        "corecast ÷ server".to_string()
    } else {
        format!("÷ {base_name}")
    };
    // The column beside the headline: the server's CPU, or the rate where CPU is the headline.
    let extra_name = if cpu_is_headline(&res.id) {
        let rate = match cpu_unit(&res.id) {
            "request" => "answers/s",
            _ => "deliveries/s",
        };
        rate.to_string()
    } else {
        format!("server CPU-µs per {}", cpu_unit(&res.id))
    };
    let exact_name = if upgrades {
        "every answer as expected"
    } else {
        "exact delivery"
    };
    // Idle scenarios: the kernel's memory and the keep-alive CPU instead of latency and CPU per
    // delivery, which they have none of.
    let idle = holds_idle(&res.id);
    let (third, fourth) = if idle {
        (
            "kernel bytes per connection".to_string(),
            "keep-alive CPU-µs per connection per second".to_string(),
        )
    } else {
        ("p99 latency".to_string(), extra_name)
    };
    let mut md = format!("### {}\n\n", res.title);
    md += &format!(
        "| server | {} | {ratio_name} | {third} | {fourth} | {exact_name} |\n",
        res.metric
    );
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
                let x = if !against_corecast || !res.higher_is_better {
                    v / b
                } else {
                    b / v
                };
                format!("{x:.2}×")
            }
            _ => "–".into(),
        };
        let p99 = p99_ms(r)
            .map(|ms| format!("{ms:.1} ms"))
            .or_else(|| {
                r.shootout_steps
                    .last()
                    .map(|s| format!("{:.1} ms (p95, last step)", s.rtt.p95_us as f64 / 1000.0))
            })
            .unwrap_or_else(|| "–".into());
        let extra = if cpu_is_headline(&res.id) {
            fmt_num(r.deliveries_per_second)
        } else {
            r.server
                .as_ref()
                .and_then(|s| s.cpu_us_per_delivery)
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "–".into())
        };
        let exact = if r.ok {
            "yes".to_string()
        } else {
            format!("no ({} faults)", r.fault_count)
        };
        let (p99, extra) = if idle {
            (
                o.kernel
                    .as_ref()
                    .map(|k| fmt_num(k.server_bytes_per_connection))
                    .unwrap_or_else(|| "–".into()),
                o.keepalive
                    .as_ref()
                    .map(|k| format!("{:.3}", k.cpu_us_per_connection_second))
                    .unwrap_or_else(|| "–".into()),
            )
        } else {
            (p99, extra)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            o.peer,
            v.map(fmt_num).unwrap_or_else(|| "–".into()),
            ratio,
            p99,
            extra,
            exact
        );
    }
    md += &format!(
        "\n{} {}\n",
        if res.higher_is_better {
            "Higher is better."
        } else {
            "Lower is better."
        },
        if against_corecast {
            "Ratios above 1 favour corecast.".to_string()
        } else {
            format!("Ratios are each row's figure ÷ the `{base_name}` row's.")
        }
    );
    if let Some(line) = against_floor(res) {
        md += &format!("\n{line}\n");
    }
    if idle {
        md += &kernel_parts(res);
    }
    if !res.note.is_empty() {
        md += &format!("\n{}\n", res.note);
    }
    md
}

/// Scenarios that hold idle connections and report the kernel's memory and keep-alive CPU.
fn holds_idle(id: &str) -> bool {
    id.starts_with("idle")
}

/// The kernel's memory for the server's end of a connection, part by part, one column per
/// server; nothing where no server had it measured.
fn kernel_parts(res: &ScenarioResult) -> String {
    let measured: Vec<(&str, &KernelMemory)> = res
        .outcomes
        .iter()
        .filter_map(|o| Some((o.peer.as_str(), o.kernel.as_ref()?)))
        .collect();
    let Some((_, first)) = measured.first() else {
        return String::new();
    };
    let names: Vec<&str> = measured.iter().map(|m| m.0).collect();
    let mut md = format!(
        "\nKernel bytes per connection at the server's end, by part (objects per connection \
         in brackets):\n\n| part | slab caches | {} |\n|---|---|{}\n",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    for (i, part) in first.parts.iter().enumerate() {
        let cells: Vec<String> = measured
            .iter()
            .map(|(_, k)| {
                k.parts
                    .get(i)
                    .map(|p| {
                        format!(
                            "{} ({:.2})",
                            fmt_num(p.bytes_per_connection),
                            p.objects_per_connection
                        )
                    })
                    .unwrap_or_else(|| "–".into())
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            part.part,
            part.caches,
            cells.join(" | ")
        );
    }
    let totals: Vec<String> = measured
        .iter()
        .map(|(_, k)| fmt_num(k.server_bytes_per_connection))
        .collect();
    let both: Vec<String> = measured
        .iter()
        .map(|(_, k)| fmt_num(k.both_ends_bytes_per_connection))
        .collect();
    let _ = writeln!(md, "| server's end | | {} |", totals.join(" | "));
    let _ = writeln!(
        md,
        "| both ends (the generator's too) | | {} |",
        both.join(" | ")
    );
    md
}

/// The p99 a table shows for a report: a whole broadcast's where there is one.
fn p99_ms(r: &Report) -> Option<f64> {
    r.broadcast_latency
        .as_ref()
        .filter(|l| l.count > 0)
        .or(Some(&r.latency))
        .filter(|l| l.count > 0)
        .map(|l| l.p99_us as f64 / 1000.0)
}

/// corecast beside the kernel's floor (the `floor` row), each figure as corecast's ÷ the
/// floor's: how far corecast is from the least a server can do here.
fn against_floor(res: &ScenarioResult) -> Option<String> {
    let report = |peer: &str| {
        res.outcomes
            .iter()
            .find(|o| o.peer == peer)
            .and_then(|o| o.report.as_ref())
    };
    let (ours, floor) = (report("corecast")?, report("floor")?);
    let (a, b) = (headline(&res.id, ours)?, headline(&res.id, floor)?);
    if a <= 0.0 || b <= 0.0 {
        return None;
    }
    let mut parts = vec![format!(
        "{} {:.2}× the floor's ({} against {})",
        res.metric,
        a / b,
        fmt_num(a),
        fmt_num(b)
    )];
    let cpu = |r: &Report| r.server.as_ref().and_then(|s| s.cpu_us_per_delivery);
    if let (Some(a), Some(b)) = (cpu(ours), cpu(floor)) {
        if !cpu_is_headline(&res.id) && b > 0.0 {
            parts.push(format!(
                "server CPU-µs per {} {:.2}× ({a:.2} against {b:.2})",
                cpu_unit(&res.id),
                a / b
            ));
        }
    }
    if let (Some(a), Some(b)) = (p99_ms(ours), p99_ms(floor)) {
        if b > 0.0 {
            parts.push(format!("p99 {:.2}× ({a:.1} against {b:.1} ms)", a / b));
        }
    }
    Some(format!(
        "Against the kernel's floor (`floor`), corecast's {}.",
        parts.join(", ")
    ))
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
    let bars: Vec<(String, f64, bool)> = res
        .outcomes
        .iter()
        .filter_map(|o| {
            let v = headline(&res.id, o.report.as_ref()?)?;
            Some((o.peer.clone(), v, o.peer == "corecast"))
        })
        .collect();
    bar_chart(
        path,
        &BarChart {
            title: &res.title,
            y_desc: &res.metric,
            size: (720, 400),
            caption_size: 20,
            x_label_area: 36,
            y_label_area: 90,
            rotate_labels: false,
            bar_margin: 18,
            y_floor: 1.0,
            y_format: &|v| fmt_num(v),
        },
        &bars,
    )
}

/// How `bar_chart` draws.
pub struct BarChart<'a> {
    pub title: &'a str,
    pub y_desc: &'a str,
    pub size: (u32, u32),
    pub caption_size: u32,
    pub x_label_area: u32,
    pub y_label_area: u32,
    /// Labels written upright, for long ones.
    pub rotate_labels: bool,
    /// Room on each side of a bar, in pixels.
    pub bar_margin: u32,
    /// The y axis goes at least this high.
    pub y_floor: f64,
    pub y_format: &'a dyn Fn(f64) -> String,
}

/// One bar per `(label, value, corecast's)` to an SVG at `path`; corecast's bars in its colour.
pub fn bar_chart(
    path: &Path,
    how: &BarChart<'_>,
    bars: &[(String, f64, bool)],
) -> anyhow::Result<()> {
    let max = bars
        .iter()
        .map(|b| b.1)
        .fold(0.0, f64::max)
        .max(how.y_floor)
        * 1.15;
    let root = SVGBackend::new(path, how.size).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(how.title, ("sans-serif", how.caption_size))
        .margin(12)
        .x_label_area_size(how.x_label_area)
        .y_label_area_size(how.y_label_area)
        .build_cartesian_2d((0..bars.len().saturating_sub(1)).into_segmented(), 0.0..max)?;
    let x_label = |x: &SegmentValue<usize>| match x {
        SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    let y_label = |v: &f64| (how.y_format)(*v);
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .light_line_style(WHITE)
        .y_desc(how.y_desc)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label);
    if how.rotate_labels {
        mesh.x_label_style(
            ("sans-serif", 12)
                .into_font()
                .transform(FontTransform::Rotate90),
        );
    }
    mesh.draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v, ours))| {
        let color = if *ours {
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
        bar.set_margin(0, 0, how.bar_margin, how.bar_margin);
        bar
    }))?;
    root.present().context("writing the chart")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_chart_names_every_bar() {
        let path =
            std::env::temp_dir().join(format!("corecast-bench-chart-{}.svg", std::process::id()));
        let bars = vec![
            ("corecast".to_string(), 3.0, true),
            ("bun".to_string(), 2.0, false),
        ];
        for rotate_labels in [false, true] {
            let how = BarChart {
                title: "a title",
                y_desc: "per second",
                size: (400, 300),
                caption_size: 16,
                x_label_area: 40,
                y_label_area: 60,
                rotate_labels,
                bar_margin: 4,
                y_floor: 1.0,
                y_format: &|v| format!("{v:.1}"),
            };
            bar_chart(&path, &how, &bars).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            for text in ["a title", "per second", "corecast", "bun"] {
                assert!(svg.contains(text), "{text} in the chart");
            }
        }
        let _ = std::fs::remove_file(&path);
    }

    fn refused(peer: &str, cpu: f64) -> Outcome {
        Outcome {
            peer: peer.into(),
            report: Some(Report {
                deliveries_per_second: 9000.0,
                server: Some(corecast_load::report::ServerUsage {
                    cpu_us_per_delivery: Some(cpu),
                    ..Default::default()
                }),
                ok: true,
                ..Report::default()
            }),
            error: None,
            kernel: None,
            keepalive: None,
        }
    }

    #[test]
    fn rows_of_corecast_run_different_ways_compare_with_the_first() {
        let res = ScenarioResult {
            id: "upgrades-refused".into(),
            title: "Refused".into(),
            metric: "server CPU-µs per request".into(),
            higher_is_better: false,
            machine: serde_json::Value::Null,
            parameters: serde_json::Value::Null,
            note: "What the rows are.".into(),
            outcomes: vec![
                refused("404 not found", 40.0),
                refused("401 bad token", 50.0),
            ],
        };
        let md = markdown(&res);
        assert!(
            md.contains("| server | server CPU-µs per request | ÷ 404 not found | p99 latency | answers/s | every answer as expected |"),
            "{md}"
        );
        assert!(
            md.contains("| 404 not found | 40.00 | 1.00× | – | 9,000 | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| 401 bad token | 50.00 | 1.25× | – | 9,000 | yes |"),
            "{md}"
        );
        assert!(
            md.contains("Ratios are each row's figure ÷ the `404 not found` row's."),
            "{md}"
        );
        assert!(md.ends_with("\n\nWhat the rows are.\n"), "{md}");
    }

    #[test]
    fn a_floor_row_gives_corecasts_distance_from_it() {
        let row = |peer: &str, rate: f64, cpu: f64, p99_us: u64| Outcome {
            peer: peer.into(),
            report: Some(Report {
                deliveries_per_second: rate,
                latency: corecast_load::report::Latency {
                    count: 10,
                    p99_us,
                    ..Default::default()
                },
                server: Some(corecast_load::report::ServerUsage {
                    cpu_us_per_delivery: Some(cpu),
                    ..Default::default()
                }),
                ok: true,
                ..Report::default()
            }),
            error: None,
            kernel: None,
            keepalive: None,
        };
        let mut res = ScenarioResult {
            id: "chat-100".into(),
            title: "Chat".into(),
            metric: "deliveries/s".into(),
            higher_is_better: true,
            machine: serde_json::Value::Null,
            parameters: serde_json::Value::Null,
            note: String::new(),
            outcomes: vec![
                row("corecast", 900_000.0, 0.5, 4_000),
                row("floor", 1_000_000.0, 0.4, 2_000),
            ],
        };
        let md = markdown(&res);
        assert!(
            md.contains("| floor | 1,000,000 | 0.90× | 2.0 ms | 0.40 | yes |"),
            "{md}"
        );
        assert!(
            md.ends_with(
                "\n\nAgainst the kernel's floor (`floor`), corecast's deliveries/s 0.90× the \
                 floor's (900,000 against 1,000,000), server CPU-µs per delivery 1.25× (0.50 \
                 against 0.40), p99 2.00× (4.0 against 2.0 ms).\n"
            ),
            "{md}"
        );
        res.outcomes.pop();
        assert!(!markdown(&res).contains("floor"));
    }

    #[test]
    fn subscription_memory_is_a_table_not_a_code_block() {
        let result = |id: &str| ScenarioResult {
            id: id.into(),
            title: id.into(),
            metric: "server bytes per connection".into(),
            higher_is_better: false,
            machine: serde_json::Value::Null,
            parameters: serde_json::Value::Null,
            note: String::new(),
            outcomes: vec![Outcome {
                peer: "corecast".into(),
                report: None,
                error: Some("not run".into()),
                kernel: None,
                keepalive: None,
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
