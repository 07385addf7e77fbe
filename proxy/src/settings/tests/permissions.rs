//! The `[[namespace]]` tables of the file and `--direct-messages`, through the whole resolution.

use super::{err, run};
use hermod_core::grants::{DirectMessages, JoinPolicy, TokenGrants};

/// The chat application of deploy/hermod-proxy.toml, uncommented, resolves as it says.
#[test]
fn example_config_namespaces_resolve() {
    let text = include_str!("../../../../deploy/hermod-proxy.toml");
    let (_, block) = text
        .split_once("# --- Room namespaces")
        .expect("deploy/hermod-proxy.toml has a namespaces section");
    let tables: Vec<&str> = block
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            ["[[namespace]]", "prefix = ", "join = ", "publish = "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    let s = run(&[], &[], Some(&tables.join("\n"))).unwrap().settings;
    let none = TokenGrants::default();
    assert!(s.rooms.may_join("public.lobby", &none));
    assert!(s.rooms.may_publish("public.lobby", &none, true));
    assert!(!s.rooms.may_publish("public.announce.news", &none, true));
    assert!(!s.rooms.may_join("team.42.general", &none));
    assert_eq!(s.rooms.namespace("dm.x").join, JoinPolicy::Grant);
    let d = run(&[], &[], None).unwrap().settings;
    assert!(
        !d.rooms.may_join("public.x", &none),
        "no file: grants needed"
    );
}

#[test]
fn bad_namespaces_are_one_line_errors() {
    let table = |body: &str| format!("[[namespace]]\n{body}\n");
    let cases = [
        (
            table("prefix = \"a.\"\njoin = \"all\"\npublish = \"any\""),
            "#1: join: `all` is not one of: any, grant, server",
        ),
        (
            table("prefix = \"a.\"\njoin = \"any\""),
            "#1: `publish` is required",
        ),
        (
            table("prefix = \"a.\"\njoin = \"any\"\npublish = \"any\"\nwho = 1"),
            "#1: unknown key `who`",
        ),
        (
            table("prefix = \"a b\"\njoin = \"any\"\npublish = \"any\""),
            "namespace prefix `a b`",
        ),
        (
            "namespace = 3\n".to_owned(),
            "expected [[namespace]] tables",
        ),
    ];
    for (text, want) in cases {
        let e = err(&[], &[], Some(&text));
        assert!(e.starts_with("--namespace (from test.toml): "), "{e}");
        assert!(e.contains(want), "{e} lacks {want}");
    }
    let twice = format!("{}{}", table(CHAT_A), table(CHAT_A));
    assert!(err(&[], &[], Some(&twice)).contains("given twice"));
}

const CHAT_A: &str = "prefix = \"a.\"\njoin = \"any\"\npublish = \"any\"";

#[test]
fn direct_messages_flag_env_file() {
    let s = |args: &[&str], env: &[(&str, &str)], f: Option<&str>| {
        run(args, env, f).unwrap().settings.direct_messages
    };
    assert_eq!(s(&[], &[], None), DirectMessages::Any);
    assert_eq!(
        s(&["--direct-messages", "grant"], &[], None),
        DirectMessages::Grant
    );
    let env = [("HERMOD_DIRECT_MESSAGES", "grant")];
    assert_eq!(s(&[], &env, None), DirectMessages::Grant);
    let file = Some("direct_messages = \"grant\"");
    assert_eq!(s(&[], &[], file), DirectMessages::Grant);
    assert_eq!(
        s(&["--direct-messages", "any"], &env, file),
        DirectMessages::Any
    );
    assert!(err(&["--direct-messages", "some"], &[], None).contains("`some` is not one of"));
}
