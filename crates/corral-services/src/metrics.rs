//! `/metrics`: every room that counts something implements [`MetricsSource`], and writes its
//! lines with an [`Exposition`], the one place that knows the Prometheus text format (HELP and
//! TYPE lines, label escaping, number formatting).
//!
//! ```
//! use corral_services::metrics::Exposition;
//! let mut out = String::new();
//! let mut e = Exposition::new(&mut out);
//! e.counter("corral_widgets_total", "Widgets made.", 3);
//! e.family("corral_widget_seconds_total", "Time per widget kind.", "counter")
//!     .sample(&[("kind", "round \"big\"")], 0.25);
//! assert!(out.contains("corral_widgets_total 3\n"));
//! assert!(out.contains("corral_widget_seconds_total{kind=\"round \\\"big\\\"\"} 0.25\n"));
//! ```

use std::fmt::{Display, Write};

/// Anything that appends Prometheus text-format lines to `/metrics`.
pub trait MetricsSource: Send + Sync {
    fn render(&self, out: &mut String);
}

/// Writes metric families in the Prometheus text format (version 0.0.4).
pub struct Exposition<'a> {
    out: &'a mut String,
}

impl<'a> Exposition<'a> {
    pub fn new(out: &'a mut String) -> Self {
        Exposition { out }
    }

    /// One unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, help, "counter").sample(&[], value);
    }

    /// One unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, help, "gauge").sample(&[], value);
    }

    /// Starts a family (`kind`: `counter`, `gauge`, `histogram`); add its samples to the result.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) -> Family<'_> {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out: self.out, name: name.to_string() }
    }
}

/// One metric family being written: its samples, each with its labels.
pub struct Family<'a> {
    out: &'a mut String,
    name: String,
}

impl Family<'_> {
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        self.sample_suffixed("", labels, value)
    }

    /// A sample of a derived series (`_bucket`, `_sum`, `_count` of a histogram).
    pub fn sample_suffixed(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// Seconds from nanoseconds, to the microsecond, as `_seconds` metrics are written.
pub fn seconds(ns: u64) -> String {
    format!("{:.6}", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_one_help_and_type_and_labels_are_escaped() {
        let mut out = String::new();
        let mut e = Exposition::new(&mut out);
        e.family("x_total", "X.", "counter").sample(&[("a", "1")], 1).sample(&[("a", "back\\slash\nnew")], 2);
        assert_eq!(out, "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 1\nx_total{a=\"back\\\\slash\\nnew\"} 2\n");
    }
}
