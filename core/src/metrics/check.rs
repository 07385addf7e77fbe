//! [`check`]: reads Prometheus text back and says whether it is well formed and lists only
//! families of [`super::names`], with their type and help text. Used by the binaries' tests
//! (and by anyone scraping by hand); not on any serving path.

use super::family::Kind;
use super::names;

/// What is wrong with an exposition, with the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpositionError {
    #[error("line {line}: not a comment, HELP/TYPE line or sample: {text}")]
    Malformed { line: usize, text: String },
    #[error("line {line}: invalid metric name {name:?}")]
    BadName { line: usize, name: String },
    #[error("line {line}: `# {what}` of {name} a second time")]
    Repeated {
        line: usize,
        what: &'static str,
        name: String,
    },
    #[error("line {line}: sample of {name} outside its family (after HELP and TYPE)")]
    Stray { line: usize, name: String },
    #[error("line {line}: {name} is not in hermod_core::metrics::names")]
    Unlisted { line: usize, name: String },
    #[error("line {line}: {name}'s HELP or TYPE differs from hermod_core::metrics::names")]
    Differs { line: usize, name: String },
}

/// Checks `text`: every line a `# HELP`, `# TYPE` or a sample; each family's HELP and TYPE
/// once, both before its samples, and its samples right after them (a histogram's `_bucket`,
/// `_sum`, `_count` included); every name valid and every family listed in
/// [`names::ALL`] with the same type and help. Returns the families in order.
pub fn check(text: &str) -> Result<Vec<&str>, ExpositionError> {
    let mut families: Vec<&str> = Vec::new();
    let mut current: Option<Current<'_>> = None;
    for (i, text) in text.lines().enumerate() {
        let line = i + 1;
        if let Some(rest) = text.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = open(&mut families, &mut current, name, line, "HELP")?;
            if names::find(name).map(|f| f.help) != Some(help) {
                return Err(differs(line, name));
            }
            family.help = true;
        } else if let Some(rest) = text.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = open(&mut families, &mut current, name, line, "TYPE")?;
            if names::find(name).map(|f| f.kind.as_str()) != Some(kind) {
                return Err(differs(line, name));
            }
            family.kind = true;
        } else if text.starts_with('#') || text.trim().is_empty() {
            continue;
        } else {
            sample(text, line, current)?;
        }
    }
    Ok(families)
}

/// The family whose lines are being read, and which of its HELP and TYPE were seen.
#[derive(Debug, Clone, Copy)]
struct Current<'t> {
    name: &'t str,
    help: bool,
    kind: bool,
}

/// The family a HELP or TYPE line is about: the current one (if that line is not a repeat) or
/// a new one (never seen before, and listed).
fn open<'t, 'c>(
    families: &mut Vec<&'t str>,
    current: &'c mut Option<Current<'t>>,
    name: &'t str,
    line: usize,
    what: &'static str,
) -> Result<&'c mut Current<'t>, ExpositionError> {
    valid_name(name, line)?;
    let repeated = || ExpositionError::Repeated {
        line,
        what,
        name: name.to_owned(),
    };
    let fresh = !matches!(current, Some(c) if c.name == name);
    if fresh {
        if families.contains(&name) {
            return Err(repeated());
        }
        if names::find(name).is_none() {
            return Err(ExpositionError::Unlisted {
                line,
                name: name.to_owned(),
            });
        }
        families.push(name);
        *current = Some(Current {
            name,
            help: false,
            kind: false,
        });
    }
    match current {
        Some(c) if !(if what == "HELP" { c.help } else { c.kind }) => Ok(c),
        _ => Err(repeated()),
    }
}

/// A sample line: `name[{labels}] value`, belonging to the current family.
fn sample(text: &str, line: usize, current: Option<Current<'_>>) -> Result<(), ExpositionError> {
    let malformed = || ExpositionError::Malformed {
        line,
        text: text.to_owned(),
    };
    let end = text.find(['{', ' ']).ok_or_else(malformed)?;
    let name = &text[..end];
    valid_name(name, line)?;
    let rest = &text[end..];
    let value = match rest.strip_prefix('{') {
        Some(labels) => labels.rsplit_once("} ").ok_or_else(malformed)?.1,
        None => rest.trim_start(),
    };
    let value = value.split(' ').next().unwrap_or("");
    let numeric = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
    if !numeric {
        return Err(malformed());
    }
    let ours = current
        .is_some_and(|c| c.help && c.kind && (name == c.name || histogram_part(name, c.name)));
    if !ours {
        return Err(ExpositionError::Stray {
            line,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether `name` is `family`'s `_bucket`, `_sum` or `_count` and `family` a histogram.
fn histogram_part(name: &str, family: &str) -> bool {
    let is_histogram = names::find(family).is_some_and(|f| f.kind == Kind::Histogram);
    is_histogram
        && name
            .strip_prefix(family)
            .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count"))
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_name(name: &str, line: usize) -> Result<(), ExpositionError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ExpositionError::BadName {
            line,
            name: name.to_owned(),
        })
    }
}

fn differs(line: usize, name: &str) -> ExpositionError {
    ExpositionError::Differs {
        line,
        name: name.to_owned(),
    }
}
