//! Who may do what once authenticated: the room namespaces of the `--config` file
//! (`[[namespace]]` tables, file only: a policy is a table, not a flag) and
//! `--direct-messages`. The decisions themselves are `hermod_core::grants`.
//!
//! ```toml
//! [[namespace]]
//! prefix = "public."     # rooms whose name starts with this
//! join = "any"           # any | grant | server
//! publish = "members"    # any | members | grant | server
//! ```

use std::sync::Arc;

use hermod_core::grants::{DirectMessages, JoinPolicy, Namespace, PublishPolicy, RoomPolicy};
use hermod_core::settings::{one_of, Sources};

use super::resolve::ConfigError;
use super::Settings;

/// The file key of the namespace tables.
pub const NAMESPACE_KEY: &str = "namespace";

/// Resolves `--direct-messages` and the file's namespaces into `s`.
pub fn resolve_permissions(src: &Sources<'_>, s: &mut Settings) -> Result<(), ConfigError> {
    src.set(&mut s.direct_messages, "direct_messages", |v| {
        one_of(
            v,
            &[
                ("any", DirectMessages::Any),
                ("grant", DirectMessages::Grant),
            ],
        )
    })?;
    let Some(file) = src.file else {
        return Ok(());
    };
    let Some(value) = file.value(NAMESPACE_KEY) else {
        return Ok(());
    };
    let error = |problem: String| ConfigError::new(NAMESPACE_KEY, file.origin(), problem);
    let toml::Value::Array(tables) = value else {
        return Err(error("expected [[namespace]] tables".to_owned()));
    };
    let namespaces = tables
        .iter()
        .enumerate()
        .map(|(i, table)| parse_namespace(table).map_err(|p| error(format!("#{}: {p}", i + 1))))
        .collect::<Result<Vec<_>, _>>()?;
    let policy = RoomPolicy::new(namespaces).map_err(|e| error(e.to_string()))?;
    s.rooms = Arc::new(policy);
    Ok(())
}

/// One `[[namespace]]` table: `prefix`, `join` and `publish`, all required, nothing else.
fn parse_namespace(value: &toml::Value) -> Result<Namespace, String> {
    let toml::Value::Table(table) = value else {
        return Err("expected a table".to_owned());
    };
    if let Some(key) = table
        .keys()
        .find(|k| !["prefix", "join", "publish"].contains(&k.as_str()))
    {
        return Err(format!("unknown key `{key}`"));
    }
    let text = |key: &str| match table.get(key) {
        Some(toml::Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("`{key}` is required")),
    };
    let join = one_of(
        text("join")?,
        &[
            ("any", JoinPolicy::Any),
            ("grant", JoinPolicy::Grant),
            ("server", JoinPolicy::Server),
        ],
    )
    .map_err(|e| format!("join: {e}"))?;
    let publish = one_of(
        text("publish")?,
        &[
            ("any", PublishPolicy::Any),
            ("members", PublishPolicy::Members),
            ("grant", PublishPolicy::Grant),
            ("server", PublishPolicy::Server),
        ],
    )
    .map_err(|e| format!("publish: {e}"))?;
    Ok(Namespace {
        prefix: text("prefix")?.to_owned(),
        join,
        publish,
    })
}
