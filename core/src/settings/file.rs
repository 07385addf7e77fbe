//! The `--config` TOML file: flat `key = value` lines whose keys are setting names.

use super::{Origin, SettingError};

/// A parsed `--config` file: its path (for errors) and its keys.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// Shown in errors as the value's origin.
    path: String,
    /// The top-level keys, each a known setting (checked at parse).
    table: toml::Table,
}

impl ConfigFile {
    /// Parses `text` and checks that every key is a known setting (`allowed`). A syntax error
    /// is one line naming the file and the line.
    pub fn parse(path: &str, text: &str, allowed: &[&str]) -> Result<Self, SettingError> {
        let origin = Origin::File(path.to_owned());
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            let message: Vec<&str> = e.message().lines().map(str::trim).collect();
            let problem = format!("line {line}: {}", message.join("; "));
            SettingError::new("config", origin.clone(), problem)
        })?;
        if let Some(key) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(SettingError::new(
                "config",
                origin,
                format!("unknown key `{key}`"),
            ));
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
        })
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &str, allowed: &[&str]) -> Result<Self, SettingError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingError::new("config", Origin::Flag, format!("{path}: {e}")))?;
        Self::parse(path, &text, allowed)
    }

    /// The file's path, as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// This file as the origin of a value.
    pub fn origin(&self) -> Origin {
        Origin::File(self.path.clone())
    }

    /// The raw TOML value of `key`, for settings that are not a single scalar (lists).
    pub fn value(&self, key: &str) -> Option<&toml::Value> {
        self.table.get(key)
    }

    /// The value of `key` as text (integers and booleans written out), or an error for other
    /// TOML types.
    pub fn get(&self, key: &str) -> Result<Option<String>, SettingError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(SettingError::new(
                key,
                self.origin(),
                "expected a string, an integer or a boolean",
            )),
        }
    }
}
