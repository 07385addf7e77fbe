//! The metric list of docs/operations.md, generated from [`super::names::ALL`] (a test in
//! `tests.rs` fails when the file and the table differ, and rewrites the file when run with
//! `HERMOD_BLESS_DOCS=1`).

use std::fmt::Write as _;

use super::names::ALL;

/// The line before the generated list in docs/operations.md.
pub const BEGIN: &str = "<!-- metrics: generated from hermod_core::metrics::names; do not edit -->";
/// The line after it.
pub const END: &str = "<!-- metrics: end -->";

/// The metric list as a Markdown table, one row per family, in table order.
pub fn markdown() -> String {
    let mut out = String::with_capacity(ALL.len() * 160);
    out.push_str("| metric | type | labels | exported by | help |\n");
    out.push_str("|---|---|---|---|---|\n");
    for f in ALL {
        let labels = f.labels.join(", ");
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            f.name,
            f.kind.as_str(),
            labels,
            f.source.describe(),
            f.help.replace('|', "\\|"),
        );
    }
    out
}

/// `doc` with the text between the [`BEGIN`] and [`END`] lines replaced by [`markdown`];
/// `None` when the markers are missing.
pub fn splice(doc: &str) -> Option<String> {
    let start = doc.find(BEGIN)? + BEGIN.len();
    let end = start + doc[start..].find(END)?;
    let mut out = String::with_capacity(doc.len() + 1024);
    out.push_str(&doc[..start]);
    out.push_str("\n\n");
    out.push_str(&markdown());
    out.push('\n');
    out.push_str(&doc[end..]);
    Some(out)
}
