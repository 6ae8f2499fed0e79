//! `timeline.svg`: throughput and latency over a run, with the fault windows shaded, written by
//! hand as SVG (no plotting dependency).
//!
//! Top panel: successful sends and polls per second. Bottom panel: the latency of every send
//! (invoke to completion, milliseconds, log scale), green when acknowledged, orange when its
//! outcome is unknown, red when it failed. Fault windows are shaded red and labelled.

use std::collections::HashMap;
use std::fmt::Write;

use crate::checker::liveness::fault_windows;
use crate::history::{Function, Op, OpType, Process};

const WIDTH: f64 = 1000.0;
const PANEL_HEIGHT: f64 = 220.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_TOP: f64 = 30.0;
const GAP: f64 = 50.0;
const LATENCY_MS_MAX: f64 = 20_000.0;
/// At most this many latency points are drawn (every n-th send beyond it).
const LATENCY_POINTS_MAX: usize = 20_000;

pub fn timeline_svg(history: &[Op]) -> String {
    let end_s = history.iter().map(|op| op.time_ns).max().unwrap_or(0) as f64 / 1e9;
    let end_s = end_s.max(1.0);
    let plot_width = WIDTH - MARGIN_LEFT - 20.0;
    let x = |seconds: f64| MARGIN_LEFT + seconds / end_s * plot_width;
    let seconds = end_s.ceil() as usize;
    let mut sends_ok = vec![0u32; seconds + 1];
    let mut polls_ok = vec![0u32; seconds + 1];
    let mut latencies: Vec<(f64, f64, OpType)> = Vec::new();
    let mut invoked: HashMap<&Process, u64> = HashMap::new();
    for op in history.iter().filter(|op| op.is_client()) {
        let second = (op.time_ns / 1_000_000_000) as usize;
        match (op.f, op.op_type) {
            (Function::Send | Function::Poll, OpType::Invoke) => {
                invoked.insert(&op.process, op.time_ns);
            }
            (Function::Send, completion) => {
                if completion == OpType::Ok {
                    sends_ok[second.min(seconds)] += 1;
                }
                if let Some(start) = invoked.remove(&op.process) {
                    let latency_ms = (op.time_ns.saturating_sub(start)) as f64 / 1e6;
                    latencies.push((start as f64 / 1e9, latency_ms, completion));
                }
            }
            (Function::Poll, OpType::Ok) => {
                polls_ok[second.min(seconds)] += 1;
                invoked.remove(&op.process);
            }
            _ => {}
        }
    }
    let height = MARGIN_TOP + 2.0 * PANEL_HEIGHT + GAP + 40.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let top = MARGIN_TOP;
    let bottom = MARGIN_TOP + PANEL_HEIGHT + GAP;
    for window in fault_windows(history) {
        let (from, to) = (window.start_ns as f64 / 1e9, window.end_ns as f64 / 1e9);
        for panel in [top, bottom] {
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{panel}" width="{:.1}" height="{PANEL_HEIGHT}" fill="#f4b6b6" opacity="0.6"/>"##,
                x(from),
                (x(to) - x(from)).max(1.0)
            );
        }
        let label = fault_label(history, window.start_ns);
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#a33">{label}</text>"##,
            x(from) + 2.0,
            top - 4.0
        );
    }
    // Throughput panel.
    let peak = sends_ok
        .iter()
        .chain(&polls_ok)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_rate = |count: u32| top + PANEL_HEIGHT - f64::from(count) / peak * PANEL_HEIGHT;
    for (series, colour, name) in [
        (&sends_ok, "#1f6fb2", "sends ok/s"),
        (&polls_ok, "#5a9e3a", "polls ok/s"),
    ] {
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(second, count)| format!("{:.1},{:.1}", x(second as f64 + 0.5), y_rate(*count)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let legend_y = if name.starts_with("sends") {
            top + 12.0
        } else {
            top + 26.0
        };
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{legend_y}" fill="{colour}">{name}</text>"#,
            WIDTH - 120.0
        );
    }
    axis(&mut svg, top, &format!("ops/s (peak {peak})"), end_s, &x);
    // Latency panel, log scale from 1 ms to LATENCY_MS_MAX.
    let y_latency = |ms: f64| {
        let fraction = (ms.clamp(1.0, LATENCY_MS_MAX)).log10() / LATENCY_MS_MAX.log10();
        bottom + PANEL_HEIGHT - fraction * PANEL_HEIGHT
    };
    let step = latencies.len().div_ceil(LATENCY_POINTS_MAX).max(1);
    for (start_s, latency_ms, outcome) in latencies.iter().step_by(step) {
        let colour = match outcome {
            OpType::Ok => "#2e8b57",
            OpType::Info => "#e08a00",
            _ => "#c62828",
        };
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{colour}"/>"#,
            x(*start_s),
            y_latency(*latency_ms)
        );
    }
    for ms in [1.0, 10.0, 100.0, 1000.0, 10000.0] {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{ms} ms</text>"##,
            MARGIN_LEFT - 4.0,
            y_latency(ms) + 4.0
        );
    }
    axis(&mut svg, bottom, "send latency (log)", end_s, &x);
    svg.push_str("</svg>\n");
    svg
}

/// The fault that started at `start_ns`, for its label.
fn fault_label(history: &[Op], start_ns: u64) -> String {
    history
        .iter()
        .find(|op| op.f == Function::StartFault && op.time_ns == start_ns)
        .and_then(|op| op.fault.clone())
        .unwrap_or_default()
}

fn axis(svg: &mut String, top: f64, title: &str, end_s: f64, x: &dyn Fn(f64) -> f64) {
    let bottom = top + PANEL_HEIGHT;
    let _ = writeln!(
        svg,
        r##"<rect x="{MARGIN_LEFT}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#333"/>"##,
        x(end_s) - MARGIN_LEFT
    );
    let _ = writeln!(
        svg,
        r##"<text x="{MARGIN_LEFT}" y="{:.1}" fill="#333">{title}</text>"##,
        bottom + 28.0
    );
    let tick_s = if end_s > 600.0 {
        60.0
    } else if end_s > 120.0 {
        30.0
    } else {
        10.0
    };
    let mut tick = 0.0;
    while tick <= end_s {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{tick}s</text>"##,
            x(tick),
            bottom + 14.0
        );
        tick += tick_s;
    }
}
