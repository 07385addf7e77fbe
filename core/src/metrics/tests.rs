use super::names::{self, ALL};
use super::*;

/// Writes every family of the table once, with made-up values.
fn write_all(out: &mut String) {
    let mut w = Exposition::new(out);
    for f in ALL {
        match (f.kind, f.labels.len()) {
            (Kind::Histogram, _) => w.histogram(f, &[0.001, 0.5, 5.0], [1, 0, 2, 1], 12.5),
            (_, 0) => {
                w.header(f);
                w.sample(f, &[], 7);
            }
            (_, n) => {
                w.header(f);
                let odd: [&dyn std::fmt::Display; 4] = [&"a\"b\\c\nd"; 4];
                w.sample(f, &odd[..n], 1);
                let plain: [&dyn std::fmt::Display; 4] = [&"x"; 4];
                w.sample(f, &plain[..n], 0.25);
            }
        }
    }
}

#[test]
fn the_table_names_each_metric_once_and_validly() {
    for (i, f) in ALL.iter().enumerate() {
        assert!(is_valid_name(f.name), "{}", f.name);
        assert!(f.name.starts_with("hermod_"), "{}", f.name);
        assert!(
            ALL[..i].iter().all(|g| g.name != f.name),
            "{} listed twice",
            f.name
        );
        assert!(
            !f.help.is_empty() && !f.help.contains(['\n', '\\']),
            "{}",
            f.name
        );
        assert!(f.labels.iter().all(|l| is_valid_name(l) && *l != "le"));
        if f.kind == Kind::Counter {
            assert!(
                f.name.ends_with("_total") || f.name.ends_with("_sum"),
                "counter {} should end in _total",
                f.name
            );
        }
        assert_eq!(names::find(f.name), Some(f));
    }
}

#[test]
fn every_family_written_reads_back_as_valid_prometheus_text() {
    let mut out = String::new();
    write_all(&mut out);
    let families = check(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let expected: Vec<&str> = ALL.iter().map(|f| f.name).collect();
    assert_eq!(families, expected);
    assert!(
        out.contains("hermod_build_info{version=\"a\\\"b\\\\c\\nd\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("hermod_tunnel_bytes_total{direction=\"x\"} 0.25\n"),
        "{out}"
    );
    assert!(
        out.contains("hermod_send_latency_seconds_bucket{le=\"0.001\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("hermod_send_latency_seconds_bucket{le=\"5\"} 3\n"),
        "{out}"
    );
    assert!(
        out.contains("hermod_send_latency_seconds_bucket{le=\"+Inf\"} 4\n"),
        "{out}"
    );
    assert!(
        out.contains("hermod_send_latency_seconds_sum 12.5\n"),
        "{out}"
    );
    assert!(
        out.contains("hermod_send_latency_seconds_count 4\n"),
        "{out}"
    );
}

#[test]
fn the_writer_appends_help_then_type_then_samples() {
    let mut out = String::from("x\n");
    let mut w = Exposition::new(&mut out);
    w.counter(&names::REDIS_ROUND_TRIPS, 42);
    w.gauge(&names::BROKER_LINKS_UP, 0);
    assert_eq!(
        out,
        "x\n\
         # HELP hermod_redis_round_trips_total Redis commands answered (each pipelined command counts once).\n\
         # TYPE hermod_redis_round_trips_total counter\n\
         hermod_redis_round_trips_total 42\n\
         # HELP hermod_broker_links_up Broker links connected and not draining.\n\
         # TYPE hermod_broker_links_up gauge\n\
         hermod_broker_links_up 0\n"
    );
}

fn counter_text(name: &str) -> String {
    let f = names::find(name).copied().unwrap_or(Family::counter(
        Source::Gateway,
        "hermod_unlisted_total",
        "Not in the table.",
    ));
    format!(
        "# HELP {name} {}\n# TYPE {name} counter\n{name} 1\n",
        f.help
    )
}

#[test]
fn the_checker_refuses_what_prometheus_would_not_take() {
    let ok = counter_text("hermod_handshakes_total");
    assert_eq!(check(&ok), Ok(vec!["hermod_handshakes_total"]));
    let twice = format!("{ok}{ok}");
    assert!(matches!(
        check(&twice),
        Err(ExpositionError::Repeated { line: 4, .. })
    ));
    let help = "# HELP hermod_handshakes_total WebSocket upgrades completed.\n";
    let help_twice = format!("{help}{ok}");
    assert!(matches!(
        check(&help_twice),
        Err(ExpositionError::Repeated { line: 2, .. })
    ));
    let early = format!("hermod_handshakes_total 1\n{ok}");
    assert!(matches!(
        check(&early),
        Err(ExpositionError::Stray { line: 1, .. })
    ));
    let other = format!("{ok}hermod_tunnels_total 1\n");
    assert!(matches!(
        check(&other),
        Err(ExpositionError::Stray { line: 4, .. })
    ));
    let unlisted = counter_text("hermod_unlisted_total");
    assert!(matches!(
        check(&unlisted),
        Err(ExpositionError::Unlisted { line: 1, .. })
    ));
    let retyped = ok.replace(" counter\n", " gauge\n");
    assert!(matches!(
        check(&retyped),
        Err(ExpositionError::Differs { line: 2, .. })
    ));
    let reworded = ok.replace("completed.", "done.");
    assert!(matches!(
        check(&reworded),
        Err(ExpositionError::Differs { line: 1, .. })
    ));
    let bad_name = ok.replace("hermod_handshakes_total 1", "hermod-handshakes 1");
    assert!(matches!(
        check(&bad_name),
        Err(ExpositionError::BadName { line: 3, .. })
    ));
    let no_value = ok.replace("hermod_handshakes_total 1", "hermod_handshakes_total x");
    assert!(matches!(
        check(&no_value),
        Err(ExpositionError::Malformed { line: 3, .. })
    ));
    let histogram_parts_elsewhere = format!("{ok}hermod_handshakes_total_sum 1\n");
    assert!(check(&histogram_parts_elsewhere).is_err());
}

/// docs/operations.md lists exactly the families of the table (run with
/// `HERMOD_BLESS_DOCS=1` to rewrite the list after changing the table).
#[test]
fn the_operations_doc_lists_every_metric_of_the_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let expected = docs::splice(&doc).unwrap_or_else(|| {
        panic!(
            "{path} lacks the lines {:?} and {:?}",
            docs::BEGIN,
            docs::END
        )
    });
    if expected == doc {
        return;
    }
    if std::env::var_os("HERMOD_BLESS_DOCS").is_some() {
        std::fs::write(path, &expected).unwrap_or_else(|e| panic!("{path}: {e}"));
        return;
    }
    panic!(
        "the metric list in {path} differs from hermod_core::metrics::names; rerun with \
         HERMOD_BLESS_DOCS=1 to regenerate it. Expected:\n{}",
        docs::markdown()
    );
}
