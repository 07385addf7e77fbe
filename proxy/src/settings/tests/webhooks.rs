//! `--webhook-*` (`settings/webhooks.rs`): defaults, every source, and the errors.

use std::time::Duration;

use super::{err, run};
use crate::settings::webhooks::{EventKind, EventSet, WebhookSecret};

const HOOK_SECRET: &str = "whsec-0123456789abcdef-0123456789";

#[test]
fn webhooks_are_off_without_a_url_and_default_with_one() {
    let r = run(&[], &[], None).expect("resolves");
    assert_eq!(r.settings.webhooks, None);
    let r = run(
        &["--webhook-url", "http://127.0.0.1:8000/hook"],
        &[("HERMOD_WEBHOOK_SECRET", HOOK_SECRET)],
        None,
    )
    .expect("resolves");
    let w = r.settings.webhooks.expect("on");
    assert_eq!(w.url, "http://127.0.0.1:8000/hook");
    assert_eq!(w.secret, WebhookSecret::new(HOOK_SECRET));
    assert_eq!(w.events, EventSet::DEFAULT);
    assert_eq!((w.queue, w.batch), (100_000, 100));
    assert_eq!(w.timeout, Duration::from_secs(10));
    // The secret is never shown.
    assert!(!format!("{w:?}").contains(HOOK_SECRET));
}

#[test]
fn every_webhook_setting_is_read() {
    let text = format!(
        "webhook_url = \"http://[::1]:9/h\"\nwebhook_secret = \"{HOOK_SECRET}\"\n\
         webhook_events = \"join\"\nwebhook_queue = 7\nwebhook_batch = 3\n\
         webhook_timeout = \"250ms\"\n"
    );
    let w = run(&[], &[], Some(&text))
        .expect("resolves")
        .settings
        .webhooks
        .expect("on");
    assert_eq!(w.url, "http://[::1]:9/h");
    assert!(w.events.contains(EventKind::Join) && !w.events.contains(EventKind::Connect));
    assert_eq!((w.queue, w.batch), (7, 3));
    assert_eq!(w.timeout, Duration::from_millis(250));
}

#[test]
fn webhook_errors_name_the_setting() {
    let url = ["--webhook-url", "http://127.0.0.1:8000/hook"];
    assert!(
        err(&url, &[], None).contains("webhook_secret")
            || err(&url, &[], None).contains("webhook-secret")
    );
    let short = [&url[..], &["--webhook-secret", "too-short"]].concat();
    assert!(
        err(&short, &[], None).contains("32"),
        "{}",
        err(&short, &[], None)
    );
    let with = |extra: &[&str]| {
        let mut args = vec![url[0], url[1], "--webhook-secret", HOOK_SECRET];
        args.extend_from_slice(extra);
        err(&args, &[], None)
    };
    assert!(with(&["--webhook-events", "nope"]).contains("nope"));
    assert!(with(&["--webhook-queue", "0"]).contains("webhook"));
    assert!(with(&["--webhook-batch", "100000"]).contains("webhook"));
    let https = err(
        &[
            "--webhook-url",
            "https://example.com/h",
            "--webhook-secret",
            HOOK_SECRET,
        ],
        &[],
        None,
    );
    assert!(https.contains("https:// is not supported yet"), "{https}");
    // Every error is one line, and none shows the secret.
    for e in [with(&["--webhook-events", "nope"]), err(&short, &[], None)] {
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(!e.contains(HOOK_SECRET), "{e}");
    }
}

#[test]
fn the_events_stream_is_off_by_default_and_needs_redis() {
    use crate::settings::events_stream::EventsStreamSettings;
    let r = run(&[], &[], None).expect("resolves");
    assert_eq!(r.settings.events_stream, None);
    let redis = ["--redis", "redis://127.0.0.1:6379"];
    let on = [&redis[..], &["--events-stream", "hermod:events"]].concat();
    let s = run(&on, &[], None).expect("resolves").settings;
    assert_eq!(
        s.events_stream,
        Some(EventsStreamSettings {
            key: "hermod:events".to_owned(),
            maxlen: 1_000_000,
            queue: 100_000,
            events: EventSet::DEFAULT,
        })
    );
    // Its own bounds, and --webhook-events's selection even without --webhook-url.
    let text =
        "events_stream_maxlen = 500\nevents_stream_queue = 9\nwebhook_events = \"publish\"\n";
    let s = run(&on, &[], Some(text))
        .expect("resolves")
        .settings
        .events_stream
        .expect("on");
    assert_eq!((s.maxlen, s.queue), (500, 9));
    assert!(s.events.contains(EventKind::Publish) && !s.events.contains(EventKind::Join));
    let env = run(&redis, &[("HERMOD_EVENTS_STREAM", "k")], None).expect("resolves");
    assert_eq!(
        env.settings.events_stream.map(|s| s.key).as_deref(),
        Some("k")
    );

    // Without Redis storage: one line naming the setting.
    let e = err(&["--events-stream", "hermod:events"], &[], None);
    assert!(
        e.contains("events_stream") || e.contains("events-stream"),
        "{e}"
    );
    assert!(e.contains("--redis"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let bad = [&redis[..], &["--events-stream", "a key"]].concat();
    assert!(err(&bad, &[], None).contains("events"));
    let zero = [&on[..], &["--events-stream-maxlen", "0"]].concat();
    assert!(err(&zero, &[], None).contains("maxlen"));
}
