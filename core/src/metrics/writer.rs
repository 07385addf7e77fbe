//! [`Exposition`]: writes families of [`super::names`] in the Prometheus text exposition format
//! (version 0.0.4) into one `String`: `# HELP` and `# TYPE` once per family, then its samples.
//! No allocation beyond the `String`'s own growth (label values are escaped as they are
//! written).

use std::fmt::{Display, Write as _};

use super::family::{Family, Kind};

/// A sample value: an integer, or a float (`_sum`s, seconds).
pub trait Number: Display + Copy {}

impl Number for u64 {}
impl Number for f64 {}

/// Appends families to a `String` in the Prometheus text format.
///
/// ```text
/// # HELP hermod_sessions_closed_total Sessions ended, by close code (1006: no close frame).
/// # TYPE hermod_sessions_closed_total counter
/// hermod_sessions_closed_total{code="1000"} 12
/// ```
#[derive(Debug)]
pub struct Exposition<'a> {
    out: &'a mut String,
}

impl<'a> Exposition<'a> {
    /// Writes after whatever `out` holds already.
    pub fn new(out: &'a mut String) -> Self {
        Exposition { out }
    }

    /// An unlabelled counter: its header and its one sample.
    pub fn counter(&mut self, family: &Family, value: impl Number) {
        debug_assert_eq!(family.kind, Kind::Counter, "{}", family.name);
        self.single(family, value);
    }

    /// An unlabelled gauge: its header and its one sample.
    pub fn gauge(&mut self, family: &Family, value: impl Number) {
        debug_assert_eq!(family.kind, Kind::Gauge, "{}", family.name);
        self.single(family, value);
    }

    /// The `# HELP` and `# TYPE` lines of a family; its samples ([`Self::sample`]) follow.
    pub fn header(&mut self, family: &Family) {
        let (name, help, kind) = (family.name, family.help, family.kind.as_str());
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the family whose header was written last, with one value per label name
    /// of the family, in order (any `Display`: `&"up"`, `&1009`; escaped here).
    pub fn sample(&mut self, family: &Family, label_values: &[&dyn Display], value: impl Number) {
        debug_assert_eq!(family.labels.len(), label_values.len(), "{}", family.name);
        self.out.push_str(family.name);
        self.labels(
            family
                .labels
                .iter()
                .copied()
                .zip(label_values.iter().copied()),
        );
        let _ = writeln!(self.out, " {value}");
    }

    /// A whole histogram: `counts` per bucket (not cumulative) for each upper bound in
    /// `bounds`, then one more for `+Inf`; `sum` in the family's unit.
    pub fn histogram(
        &mut self,
        family: &Family,
        bounds: &[f64],
        counts: impl IntoIterator<Item = u64>,
        sum: f64,
    ) {
        debug_assert_eq!(family.kind, Kind::Histogram, "{}", family.name);
        self.header(family);
        let name = family.name;
        let mut cumulative = 0u64;
        let mut counts = counts.into_iter();
        for le in bounds {
            cumulative += counts.next().unwrap_or(0);
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += counts.next().unwrap_or(0);
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(self.out, "{name}_sum {sum}");
        let _ = writeln!(self.out, "{name}_count {cumulative}");
    }

    fn single(&mut self, family: &Family, value: impl Number) {
        self.header(family);
        self.sample(family, &[], value);
    }

    /// `{name="value",...}`, nothing when there are no labels.
    fn labels<'l>(&mut self, labels: impl Iterator<Item = (&'l str, &'l dyn Display)>) {
        let mut first = true;
        for (name, value) in labels {
            self.out.push_str(if first { "{" } else { "," });
            first = false;
            self.out.push_str(name);
            self.out.push_str("=\"");
            let _ = write!(Escaped(self.out), "{value}");
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
    }
}

/// Writes into the `String` with `\\`, `"` and newlines escaped, as label values must be.
struct Escaped<'s>(&'s mut String);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '"' => self.0.push_str("\\\""),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}
