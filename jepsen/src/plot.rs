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
/// Width of one character of a fault label at the font size used (pixels, about).
const LABEL_CHAR_WIDTH: f64 = 6.2;
/// At most this many latency points are drawn (every n-th send beyond it).
const LATENCY_POINTS_MAX: usize = 20_000;

/// What the picture shows, measured from the history.
struct Measurements {
    /// Successful sends and polls per second of the run.
    sends_ok: Vec<u32>,
    polls_ok: Vec<u32>,
    /// Every completed send: (invoked at, seconds; latency, ms; outcome).
    latencies: Vec<(f64, f64, OpType)>,
}

fn measure(history: &[Op], seconds: usize) -> Measurements {
    let mut measured = Measurements {
        sends_ok: vec![0; seconds + 1],
        polls_ok: vec![0; seconds + 1],
        latencies: Vec::new(),
    };
    let mut invoked: HashMap<&Process, u64> = HashMap::new();
    for op in history.iter().filter(|op| op.is_client()) {
        let second = ((op.time_ns / 1_000_000_000) as usize).min(seconds);
        match (op.f, op.op_type) {
            (Function::Send | Function::Poll, OpType::Invoke) => {
                invoked.insert(&op.process, op.time_ns);
            }
            (Function::Send, completion) => {
                if completion == OpType::Ok {
                    measured.sends_ok[second] += 1;
                }
                if let Some(start) = invoked.remove(&op.process) {
                    let latency_ms = (op.time_ns.saturating_sub(start)) as f64 / 1e6;
                    measured
                        .latencies
                        .push((start as f64 / 1e9, latency_ms, completion));
                }
            }
            (Function::Poll, OpType::Ok) => {
                measured.polls_ok[second] += 1;
                invoked.remove(&op.process);
            }
            _ => {}
        }
    }
    measured
}

/// The SVG being written and the run's time scale.
struct Canvas {
    svg: String,
    end_s: f64,
}

impl Canvas {
    const TOP: f64 = MARGIN_TOP;
    const BOTTOM: f64 = MARGIN_TOP + PANEL_HEIGHT + GAP;

    /// The x coordinate of a moment of the run.
    fn x(&self, seconds: f64) -> f64 {
        MARGIN_LEFT + seconds / self.end_s * (WIDTH - MARGIN_LEFT - 20.0)
    }

    fn line(&mut self, text: std::fmt::Arguments) {
        let _ = self.svg.write_fmt(text);
        self.svg.push('\n');
    }

    fn fault_windows(&mut self, history: &[Op]) {
        // Where the previous label ends: a label that would overlap it is left out.
        let mut free_from = 0.0;
        for window in fault_windows(history) {
            let from = self.x(window.start_ns as f64 / 1e9);
            let width = (self.x(window.end_ns as f64 / 1e9) - from).max(1.0);
            for panel in [Self::TOP, Self::BOTTOM] {
                self.line(format_args!(
                    r##"<rect x="{from:.1}" y="{panel}" width="{width:.1}" height="{PANEL_HEIGHT}" fill="#f4b6b6" opacity="0.6"/>"##
                ));
            }
            // A label that would overlap the previous one (a long run) or run off the picture
            // is left out: the window names its fault in a tooltip, and the run log lists
            // them all.
            let label = fault_label(history, window.start_ns);
            self.line(format_args!(
                r##"<rect x="{from:.1}" y="{:.1}" width="{width:.1}" height="12" fill="none"><title>{label}</title></rect>"##,
                Self::TOP - 14.0
            ));
            let label_end = from + 2.0 + label.len() as f64 * LABEL_CHAR_WIDTH;
            if from >= free_from && label_end <= WIDTH {
                self.line(format_args!(
                    r##"<text x="{:.1}" y="{:.1}" fill="#a33">{label}</text>"##,
                    from + 2.0,
                    Self::TOP - 4.0
                ));
                free_from = label_end + 6.0;
            }
        }
    }

    fn throughput(&mut self, measured: &Measurements) {
        let peak = measured
            .sends_ok
            .iter()
            .chain(&measured.polls_ok)
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let y = |count: u32| Self::TOP + PANEL_HEIGHT - f64::from(count) / peak * PANEL_HEIGHT;
        let series = [
            (&measured.sends_ok, "#1f6fb2", "sends ok/s", 12.0),
            (&measured.polls_ok, "#5a9e3a", "polls ok/s", 26.0),
        ];
        for (counts, colour, name, legend_offset) in series {
            let points: Vec<String> = counts
                .iter()
                .enumerate()
                .map(|(second, count)| {
                    format!("{:.1},{:.1}", self.x(second as f64 + 0.5), y(*count))
                })
                .collect();
            self.line(format_args!(
                r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            ));
            self.line(format_args!(
                r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{name}</text>"#,
                WIDTH - 120.0,
                Self::TOP + legend_offset
            ));
        }
        self.axis(Self::TOP, &format!("ops/s (peak {peak})"));
    }

    /// Send latencies on a log scale from 1 ms to [`LATENCY_MS_MAX`].
    fn latency(&mut self, measured: &Measurements) {
        let y = |ms: f64| {
            let fraction = ms.clamp(1.0, LATENCY_MS_MAX).log10() / LATENCY_MS_MAX.log10();
            Self::BOTTOM + PANEL_HEIGHT - fraction * PANEL_HEIGHT
        };
        let step = measured.latencies.len().div_ceil(LATENCY_POINTS_MAX).max(1);
        for (start_s, latency_ms, outcome) in measured.latencies.iter().step_by(step) {
            let colour = match outcome {
                OpType::Ok => "#2e8b57",
                OpType::Info => "#e08a00",
                _ => "#c62828",
            };
            self.line(format_args!(
                r#"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="{colour}"/>"#,
                self.x(*start_s),
                y(*latency_ms)
            ));
        }
        for ms in [1.0, 10.0, 100.0, 1000.0, 10000.0] {
            self.line(format_args!(
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{ms} ms</text>"##,
                MARGIN_LEFT - 4.0,
                y(ms) + 4.0
            ));
        }
        self.axis(
            Self::BOTTOM,
            "send latency (log): green ok, orange unknown, red failed",
        );
    }

    fn axis(&mut self, top: f64, title: &str) {
        let bottom = top + PANEL_HEIGHT;
        let width = self.x(self.end_s) - MARGIN_LEFT;
        self.line(format_args!(
            r##"<rect x="{MARGIN_LEFT}" y="{top}" width="{width:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#333"/>"##
        ));
        self.line(format_args!(
            r##"<text x="{MARGIN_LEFT}" y="{:.1}" fill="#333">{title}</text>"##,
            bottom + 28.0
        ));
        // At most about 15 ticks, at round numbers of seconds.
        let tick_s = [10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]
            .into_iter()
            .find(|step| self.end_s / step <= 15.0)
            .unwrap_or(3600.0);
        let mut tick = 0.0;
        while tick <= self.end_s {
            self.line(format_args!(
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{tick}s</text>"##,
                self.x(tick),
                bottom + 14.0
            ));
            tick += tick_s;
        }
    }
}

pub fn timeline_svg(history: &[Op]) -> String {
    let end_ns = history.iter().map(|op| op.time_ns).max().unwrap_or(0);
    let end_s = (end_ns as f64 / 1e9).max(1.0);
    let measured = measure(history, end_s.ceil() as usize);
    let height = MARGIN_TOP + 2.0 * PANEL_HEIGHT + GAP + 40.0;
    let mut canvas = Canvas {
        svg: String::new(),
        end_s,
    };
    canvas.line(format_args!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    ));
    canvas.line(format_args!(
        r#"<rect width="100%" height="100%" fill="white"/>"#
    ));
    canvas.fault_windows(history);
    canvas.throughput(&measured);
    canvas.latency(&measured);
    canvas.svg.push_str("</svg>\n");
    canvas.svg
}

/// The fault that started at `start_ns`, for its label.
fn fault_label(history: &[Op], start_ns: u64) -> String {
    history
        .iter()
        .find(|op| op.f == Function::StartFault && op.time_ns == start_ns)
        .and_then(|op| op.fault.clone())
        .unwrap_or_default()
}
