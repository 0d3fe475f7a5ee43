//! The raw, serde-facing shape of a scene file and the translation of serde errors.
//!
//! These types mirror the YAML exactly and carry source positions (`Spanned`) so that the
//! validator can point at the offending line. Almost every key is an `Option` here even when
//! the campaign format requires it: a missing key is then reported by the validator together
//! with every other problem in the file, instead of aborting the parse at the first one.
//! Numbers are read as `i64` for the same reason: a negative count is a validation error with
//! a helpful message rather than an opaque "invalid u64" parse failure.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};

use super::error::{ConfigError, FILE_PATH, show};

/// The whole document: a single `activity` mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub activity: Option<Spanned<RawActivity>>,
}

/// `activity:`; the root of the campaign tree.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawActivity {
    pub id: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub budget_cents: Option<Spanned<i64>>,
    pub restore: Option<Spanned<bool>>,
    pub award_types: Option<Spanned<Vec<Spanned<RawAwardType>>>>,
}

/// One entry of `activity.award_types`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAwardType {
    pub id: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub awards: Option<Spanned<Vec<Spanned<RawAward>>>>,
}

/// One entry of `award_types[].awards`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAward {
    pub id: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub scenes: Option<Spanned<Vec<Spanned<RawScene>>>>,
}

/// One entry of `awards[].scenes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScene {
    pub id: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub app_ids: Option<Spanned<Vec<Spanned<i64>>>>,
    pub amount: Option<Spanned<RawAmount>>,
    pub bill_copy: Option<Spanned<RawBillCopy>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    pub inventory: Option<Spanned<RawInventory>>,
    pub compensation: Option<Spanned<RawCompensation>>,
    pub reconciliation: Option<Spanned<RawReconciliation>>,
    pub plugins: Option<Spanned<RawPlugins>>,
}

/// `scene.plugins`: a WebAssembly plugin per capability.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugins {
    pub bill_copy: Option<Spanned<RawPlugin>>,
    pub rate_limit: Option<Spanned<RawPlugin>>,
    pub inventory: Option<Spanned<RawPlugin>>,
    pub compensation: Option<Spanned<RawPlugin>>,
    pub reconciliation: Option<Spanned<RawPlugin>>,
}

/// One `scene.plugins.<capability>` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    pub path: Option<Spanned<String>>,
    pub sha256: Option<Spanned<String>>,
    pub on_failure: Option<Spanned<String>>,
    pub deadline_ms: Option<Spanned<i64>>,
    pub instructions_max: Option<Spanned<i64>>,
    pub memory_mb: Option<Spanned<i64>>,
    pub settings: Option<Spanned<RawSettings>>,
}

/// `plugins.<capability>.settings`: key → scalar, in file order. Numbers and booleans are kept
/// as their text, so `window_ms: 10000` needs no quotes.
#[derive(Debug, Default)]
pub(super) struct RawSettings(pub Vec<(Spanned<String>, Spanned<Scalar>)>);

/// A scalar read as text.
#[derive(Debug)]
pub(super) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl<'de> Deserialize<'de> for RawSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SettingsVisitor;

        impl<'de> Visitor<'de> for SettingsVisitor {
            type Value = RawSettings;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of setting name to value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSettings, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Scalar>>()?;
                    entries.push((key, value));
                }
                Ok(RawSettings(entries))
            }
        }

        deserializer.deserialize_map(SettingsVisitor)
    }
}

/// `scene.amount`; which keys are required depends on `kind`, so all are optional here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmount {
    pub kind: Option<Spanned<String>>,
    pub cents: Option<Spanned<i64>>,
    pub min_cents: Option<Spanned<i64>>,
    pub max_cents: Option<Spanned<i64>>,
}

/// `scene.bill_copy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBillCopy {
    pub default_locale: Option<Spanned<String>>,
    pub templates: Option<Spanned<RawTemplates>>,
}

/// `bill_copy.templates`: locale → template, in file order, with the position of every key
/// and value (a `BTreeMap` would lose both the order and the key positions).
#[derive(Debug, Default)]
pub(super) struct RawTemplates(pub Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for RawTemplates {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TemplatesVisitor;

        impl<'de> Visitor<'de> for TemplatesVisitor {
            type Value = RawTemplates;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of locale to template")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTemplates, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<String>>()?;
                    entries.push((key, value));
                }
                Ok(RawTemplates(entries))
            }
        }

        deserializer.deserialize_map(TemplatesVisitor)
    }
}

/// `scene.rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub scene_per_second: Option<Spanned<i64>>,
    pub scene_burst: Option<Spanned<i64>>,
    pub user_max: Option<Spanned<i64>>,
    pub user_window_seconds: Option<Spanned<i64>>,
}

/// `scene.inventory`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    pub count_max: Option<Spanned<i64>>,
    pub budget_cents: Option<Spanned<i64>>,
}

/// `scene.compensation`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompensation {
    pub retry_initial_ms: Option<Spanned<i64>>,
    pub retry_max_ms: Option<Spanned<i64>>,
}

/// `scene.reconciliation`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconciliation {
    pub tolerance_cents: Option<Spanned<i64>>,
}

/// Parses `text` into the raw tree, turning a serde failure into one [`ConfigError`].
pub(super) fn parse_raw(file: &Path, text: &str) -> Result<RawFile, ConfigError> {
    serde_saphyr::from_str::<RawFile>(text).map_err(|err| serde_error(file, text, &err))
}

/// Converts a serde-saphyr error into a [`ConfigError`] with a line, a key path and a short,
/// lowercase message (the library's own rendering appends the position and can include a
/// multi-line source snippet, both of which the `file:line: path: message` format already
/// covers).
fn serde_error(file: &Path, text: &str, err: &serde_saphyr::Error) -> ConfigError {
    let mut inner = err.without_snippet();
    while let serde_saphyr::Error::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let location = err.location().or_else(|| inner.location());
    let (line, column) = match location {
        Some(loc) if loc.line() > 0 => (loc.line(), loc.column().max(1)),
        _ => (1, 1),
    };

    let mut message = match inner {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{}`", show(key))
        }
        serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => "duplicate key".to_owned(),
        other => sanitize(&UserMessageFormatter.format_message(other)),
    };
    let found = node_at(text, line, column);
    if !message.contains('`')
        && let Some(node) = &found
        && node.position == (line, column)
        && let Some(scalar) = &node.scalar
    {
        message.push_str(&format!(", found `{}`", show(scalar)));
    }
    let path = match found {
        Some(node) if !node.path.is_empty() => node.path,
        _ => FILE_PATH.to_owned(),
    };
    ConfigError { file: file.to_path_buf(), line, path, message: lowercase_first(&message) }
}

/// Removes control characters (line breaks in particular) so that one error stays one line.
fn sanitize(message: &str) -> String {
    message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().trim().to_owned()
}

/// Lowercases the first character, which is the convention for every config error message,
/// unless it starts an acronym such as `YAML`.
fn lowercase_first(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(_) if message.chars().nth(1).is_some_and(char::is_uppercase) => message.to_owned(),
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "invalid yaml".to_owned(),
    }
}

/// The YAML node that best explains a position: its key path and, for scalars, its text.
#[derive(Debug)]
struct Node {
    position: (u64, u64),
    path: String,
    scalar: Option<String>,
}

/// One open collection while walking the parser's events.
enum Frame {
    /// A mapping: `pending` is the key whose value comes next, or `None` when a key comes next.
    Map { path: String, pending: Option<String> },
    /// A sequence: `next` is the index of the next item.
    Seq { path: String, next: usize },
}

/// Finds the key path of the node at, or else the last node before, `line`:`column` (both
/// 1-based), by replaying the YAML event stream.
///
/// serde-saphyr reports *where* a parse failed but not *which key* it was reading, so the path
/// is reconstructed here. For a position that starts a mapping and its first key, the mapping
/// wins (a "missing field" error concerns the mapping); a mapping key maps to the path of its
/// value, so an unknown key is reported as `parent.unknown_key`. On a syntax error the stream
/// stops early and the last node read is the best available answer.
fn node_at(text: &str, line: u64, column: u64) -> Option<Node> {
    let target = (line, column);
    let mut stack: Vec<Frame> = Vec::new();
    let mut best: Option<Node> = None;

    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let pos = (
            u64::try_from(span.start.line()).unwrap_or(u64::MAX),
            u64::try_from(span.start.col()).unwrap_or(u64::MAX).saturating_add(1),
        );
        let (scalar, opens) = match event {
            Event::Scalar(value, ..) => (Some(value.into_owned()), None),
            Event::Alias(_) => (None, None),
            Event::MappingStart(..) => (None, Some(true)),
            Event::SequenceStart(..) => (None, Some(false)),
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                continue;
            }
            _ => continue,
        };

        let path = match stack.last_mut() {
            None => String::new(),
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                item
            }
            Some(Frame::Map { path, pending }) => match pending.take() {
                // This node is a value: its path is the pending key's.
                Some(key) => join(path, &key),
                // This node is a key: it stands for its value's path.
                None => {
                    let key = scalar.clone().unwrap_or_else(|| "?".to_owned());
                    let child = join(path, &key);
                    *pending = Some(key);
                    child
                }
            },
        };

        if pos <= target && best.as_ref().is_none_or(|b| pos > b.position) {
            best = Some(Node { position: pos, path: path.clone(), scalar });
        }
        match opens {
            Some(true) => stack.push(Frame::Map { path, pending: None }),
            Some(false) => stack.push(Frame::Seq { path, next: 0 }),
            None => {}
        }
    }
    best
}

/// Joins a parent key path and a mapping key with `.`.
fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}
