//! Per-device windows over one field: sliding (`avg(temperature) over 10m`, the last ten minutes
//! at every message) or tumbling (`... over tumbling 10m`, one value per closed bucket). Time is
//! the message's own timestamp, so replayed or injected data gives the same answers as live data.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowFn {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    /// Change per second between the window's first and last value.
    Rate,
}

impl WindowFn {
    pub fn parse(name: &str) -> Option<WindowFn> {
        Some(match name.to_ascii_lowercase().as_str() {
            "avg" => WindowFn::Avg,
            "min" => WindowFn::Min,
            "max" => WindowFn::Max,
            "sum" => WindowFn::Sum,
            "count" => WindowFn::Count,
            "rate" => WindowFn::Rate,
            _ => return None,
        })
    }
}

/// A window as a condition writes it. Equal specs on one table share their per-device state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowSpec {
    pub func: WindowFn,
    pub field: String,
    pub width_ns: i64,
    pub tumbling: bool,
}

/// `500ms`, `30s`, `5m`, `2h`, `1d`.
pub fn parse_duration_ns(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits.parse().map_err(|_| format!("`{text}` is not a duration such as 30s, 5m or 1h"))?;
    let unit_ns: i64 = match unit.trim() {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        other => return Err(format!("unknown unit `{other}` in `{text}`; use ms, s, m, h or d")),
    };
    match n.checked_mul(unit_ns) {
        Some(ns) if ns > 0 => Ok(ns),
        _ => Err(format!("`{text}` must be more than zero and at most a few centuries")),
    }
}

/// A sliding window keeps at most this many points per device; older ones are dropped first, so
/// a device sending far faster than expected cannot exhaust memory (its aggregate then covers a
/// shorter span).
const MAX_POINTS: usize = 100_000;

/// What one device's window holds between messages.
#[derive(Debug, Clone)]
pub enum WindowState {
    Sliding {
        points: VecDeque<(i64, f64)>,
        sum: f64,
        /// Points taken so far: the front point's sequence number is `taken - points.len()`.
        taken: u64,
        /// For min and max: the points that can still become the extreme, as (sequence, value),
        /// monotonic from the front (the current extreme), so each push costs O(1) amortized
        /// instead of a scan of the window.
        extremes: VecDeque<(u64, f64)>,
    },
    Tumbling {
        bucket: i64,
        acc: Accumulator,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Accumulator {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    first: Option<(i64, f64)>,
    last: Option<(i64, f64)>,
}

impl Accumulator {
    fn add(&mut self, t: i64, v: f64) {
        if self.count == 0 {
            self.min = v;
            self.max = v;
            self.first = Some((t, v));
        }
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.last = Some((t, v));
    }

    fn value(&self, func: WindowFn) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        Some(match func {
            WindowFn::Avg => self.sum / self.count as f64,
            WindowFn::Min => self.min,
            WindowFn::Max => self.max,
            WindowFn::Sum => self.sum,
            WindowFn::Count => self.count as f64,
            WindowFn::Rate => return rate(self.first?, self.last?),
        })
    }
}

fn rate((t0, v0): (i64, f64), (t1, v1): (i64, f64)) -> Option<f64> {
    (t1 > t0).then(|| (v1 - v0) / ((t1 - t0) as f64 / 1e9))
}

impl WindowState {
    pub fn new(spec: &WindowSpec) -> Self {
        if spec.tumbling {
            WindowState::Tumbling { bucket: i64::MIN, acc: Accumulator::default() }
        } else {
            WindowState::Sliding { points: VecDeque::new(), sum: 0.0, taken: 0, extremes: VecDeque::new() }
        }
    }

    /// Takes the row at `t_ns` (its value, if the row has the field) and returns the window's
    /// value at this row: for sliding windows the aggregate over `(t - width, t]`; for tumbling
    /// ones the aggregate of the bucket this row closed, or `None` while a bucket is still open.
    pub fn push(&mut self, spec: &WindowSpec, t_ns: i64, value: Option<f64>) -> Option<f64> {
        match self {
            WindowState::Sliding { points, sum, taken, extremes } => {
                if let Some(v) = value.filter(|v| v.is_finite()) {
                    points.push_back((t_ns, v));
                    *sum += v;
                    // A new value outlives every older one it beats, so those can never be the
                    // extreme again.
                    let beaten = |old: f64| match spec.func {
                        WindowFn::Min => old >= v,
                        WindowFn::Max => old <= v,
                        _ => false,
                    };
                    if matches!(spec.func, WindowFn::Min | WindowFn::Max) {
                        while extremes.back().is_some_and(|&(_, old)| beaten(old)) {
                            extremes.pop_back();
                        }
                        extremes.push_back((*taken, v));
                    }
                    *taken += 1;
                }
                let horizon = t_ns.saturating_sub(spec.width_ns);
                while points.len() > MAX_POINTS || points.front().is_some_and(|&(t, _)| t <= horizon) {
                    let sequence = *taken - points.len() as u64;
                    let (_, v) = points.pop_front().expect("non-empty");
                    *sum -= v;
                    if extremes.front().is_some_and(|&(s, _)| s == sequence) {
                        extremes.pop_front();
                    }
                }
                if points.is_empty() {
                    *sum = 0.0; // no drift from float subtraction once the window empties
                    return None;
                }
                let n = points.len() as f64;
                Some(match spec.func {
                    WindowFn::Avg => *sum / n,
                    WindowFn::Sum => *sum,
                    WindowFn::Count => n,
                    WindowFn::Min | WindowFn::Max => extremes.front()?.1,
                    WindowFn::Rate => return rate(*points.front()?, *points.back()?),
                })
            }
            WindowState::Tumbling { bucket, acc } => {
                let this = t_ns.div_euclid(spec.width_ns);
                if this < *bucket {
                    return None; // late for a bucket already closed: ignored
                }
                let closed = if this > *bucket && *bucket != i64::MIN { acc.value(spec.func) } else { None };
                if this > *bucket {
                    *bucket = this;
                    *acc = Accumulator::default();
                }
                if let Some(v) = value.filter(|v| v.is_finite()) {
                    acc.add(t_ns, v);
                }
                closed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn spec(func: WindowFn, width_s: i64, tumbling: bool) -> WindowSpec {
        WindowSpec { func, field: "t".into(), width_ns: width_s * S, tumbling }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("5m"), Ok(300 * S));
        assert_eq!(parse_duration_ns("250ms"), Ok(250_000_000));
        assert!(parse_duration_ns("5").unwrap_err().contains("unit"));
        assert!(parse_duration_ns("0s").is_err());
        assert!(parse_duration_ns("m").is_err());
    }

    #[test]
    fn sliding_average_forgets_old_points() {
        let s = spec(WindowFn::Avg, 600, false);
        let mut w = WindowState::new(&s);
        assert_eq!(w.push(&s, 0, Some(4.0)), Some(4.0));
        assert_eq!(w.push(&s, 300 * S, Some(8.0)), Some(6.0));
        // At 600 s the point at 0 is exactly 10 minutes old: out.
        assert_eq!(w.push(&s, 600 * S, Some(10.0)), Some(9.0));
        assert_eq!(w.push(&s, 2000 * S, None), None);
    }

    #[test]
    fn sliding_min_and_max_match_a_scan_of_the_window() {
        // A pseudo-random walk with repeats and gaps, checked against the definition.
        let mut x: u64 = 7;
        for func in [WindowFn::Min, WindowFn::Max] {
            let s = spec(func, 30, false);
            let mut w = WindowState::new(&s);
            let (mut t, mut points) = (0, Vec::new());
            for _ in 0..2_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                t += (x >> 60) as i64 * S; // 0-15 s apart
                let v = ((x >> 33) % 20) as f64;
                points.push((t, v));
                let inside = points.iter().filter(|(pt, _)| *pt > t - 30 * S).map(|p| p.1);
                let expected = match func {
                    WindowFn::Min => inside.fold(f64::INFINITY, f64::min),
                    _ => inside.fold(f64::NEG_INFINITY, f64::max),
                };
                assert_eq!(w.push(&s, t, Some(v)), Some(expected), "{func:?} at {t}");
            }
        }
    }

    #[test]
    fn sliding_min_max_rate() {
        let min = spec(WindowFn::Min, 60, false);
        let mut w = WindowState::new(&min);
        w.push(&min, 0, Some(3.0));
        assert_eq!(w.push(&min, S, Some(5.0)), Some(3.0));
        let r = spec(WindowFn::Rate, 60, false);
        let mut w = WindowState::new(&r);
        assert_eq!(w.push(&r, 0, Some(10.0)), None);
        assert_eq!(w.push(&r, 10 * S, Some(5.0)), Some(-0.5));
    }

    #[test]
    fn tumbling_reports_each_closed_bucket_once() {
        let s = spec(WindowFn::Max, 60, true);
        let mut w = WindowState::new(&s);
        assert_eq!(w.push(&s, 0, Some(1.0)), None);
        assert_eq!(w.push(&s, 30 * S, Some(7.0)), None);
        assert_eq!(w.push(&s, 61 * S, Some(2.0)), Some(7.0));
        assert_eq!(w.push(&s, 62 * S, Some(9.0)), None);
        assert_eq!(w.push(&s, 10 * S, Some(100.0)), None, "late rows are ignored");
        assert_eq!(w.push(&s, 200 * S, None), Some(9.0));
    }
}
