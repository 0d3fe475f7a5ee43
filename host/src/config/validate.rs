//! Semantic validation: turns the raw tree into the model, collecting every problem.
//!
//! The walk never stops at a problem. Each check reports into [`Checker::errors`] and yields
//! a best-effort value so that the walk can go on and find the next problem; the model built
//! from those values is thrown away unless no problem was found.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::bill_template::{BILL_PLACEHOLDERS, BillCopy, Piece, template_pieces};
use super::error::{ConfigError, show};
use super::limits::{
    BUDGET_CENTS_MAX, ID_CHARS_MAX, MAX_GRANT_CENTS, NAME_CHARS_MAX, RETRY_MAX_MS_MAX, SCENES_PER_ACTIVITY_MAX,
    TEMPLATE_CHARS_MAX, USER_WINDOW_SECONDS_MAX,
};
use super::model::{
    Activity, AmountRule, Award, AwardType, Compensation, Inventory, RateLimit, Reconciliation, Scene, ScenePlugins,
};
use super::raw::{
    RawAmount, RawAward, RawAwardType, RawBillCopy, RawCompensation, RawFile, RawInventory, RawPlugin, RawPlugins,
    RawRateLimit, RawReconciliation, RawScene,
};
use crate::plugin::limits as plugin_limits;
use crate::plugin::{Capability, FailurePolicy, PluginSpec};

/// The longest locale tag accepted as a `templates` key (BCP 47 tags in practice stay short).
const LOCALE_CHARS_MAX: usize = 35;

/// Whether `id` can be an activity, scene or award type id: 1 to [`ID_CHARS_MAX`] ASCII
/// letters, digits or `-`. No `_`, so order numbers, joined with `_`, can be split back
/// unambiguously. The config and the grant path both check ids with it.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= ID_CHARS_MAX && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A validated activity plus what cross-file checks need to report on it.
pub(super) struct Parsed {
    /// The activity.
    pub(super) activity: Activity,
    /// Line of `activity.id`, where a duplicate activity id is reported.
    pub(super) id_line: u64,
}

/// Validates a parsed file; `version` is the hash of the file bytes.
pub(super) fn validate(file: &Path, version: String, raw: &RawFile) -> Result<Parsed, Vec<ConfigError>> {
    let mut checker = Checker { file, errors: Vec::new() };
    let parsed = checker.activity(raw, version);
    if checker.errors.is_empty() {
        Ok(parsed)
    } else {
        let mut errors = checker.errors;
        errors.sort_by_key(|err| err.line);
        Err(errors)
    }
}

/// Activity-wide facts the scenes need while they are validated.
struct ActivityInfo<'a> {
    id: &'a str,
    name: &'a str,
    budget_cents: Option<i64>,
    version: &'a str,
}

/// Collects the problems of one file.
struct Checker<'f> {
    file: &'f Path,
    errors: Vec<ConfigError>,
}

/// `parent.key`.
fn key(parent: &str, key: &str) -> String {
    format!("{parent}.{key}")
}

/// The line of a spanned value, never 0 (serde-saphyr uses 0 for "unknown").
fn line_of<T>(value: &Spanned<T>) -> u64 {
    value.referenced.line().max(1)
}

impl Checker<'_> {
    /// Records one problem.
    fn report(&mut self, line: u64, path: String, message: String) {
        self.errors.push(ConfigError { file: self.file.to_path_buf(), line: line.max(1), path, message });
    }

    /// Returns a required value, reporting it as missing (at the line of its parent mapping)
    /// when absent.
    fn required<'v, T>(
        &mut self,
        value: &'v Option<Spanned<T>>,
        parent_line: u64,
        parent: &str,
        name: &str,
    ) -> Option<&'v Spanned<T>> {
        if value.is_none() {
            self.report(parent_line, key(parent, name), format!("missing required key `{name}`"));
        }
        value.as_ref()
    }

    /// Checks an id: 1..=64 ASCII letters, digits or `-`. Returns the id even when invalid, so
    /// that duplicates can still be detected.
    fn id(&mut self, value: &Option<Spanned<String>>, line: u64, parent: &str) -> String {
        let Some(id) = self.required(value, line, parent, "id") else {
            return String::new();
        };
        let text = id.value.as_str();
        if !is_valid_id(text) {
            let message = if text.contains('_') {
                format!("id `{}` contains `_`, which separates the parts of order numbers; use `-`", show(text))
            } else {
                format!("id `{}` must be 1 to {ID_CHARS_MAX} ascii letters, digits or `-`", show(text))
            };
            self.report(line_of(id), key(parent, "id"), message);
        }
        id.value.clone()
    }

    /// Checks a display name: 1..=128 characters, not only whitespace.
    fn name(&mut self, value: &Option<Spanned<String>>, line: u64, parent: &str) -> String {
        let Some(name) = self.required(value, line, parent, "name") else {
            return String::new();
        };
        let chars = name.value.chars().count();
        if name.value.trim().is_empty() || chars > NAME_CHARS_MAX {
            self.report(
                line_of(name),
                key(parent, "name"),
                format!(
                    "name `{}` must be 1 to {NAME_CHARS_MAX} characters and not blank, got {chars}",
                    show(&name.value)
                ),
            );
        }
        name.value.clone()
    }

    /// Checks that an integer lies in `min..=max`; `why` explains the upper bound.
    fn range(&mut self, value: &Spanned<i64>, path: String, min: i64, max: i64, why: &str) -> Option<i64> {
        let v = value.value;
        if v < min {
            self.report(line_of(value), path, format!("value `{v}` must be at least {min}"));
            None
        } else if v > max {
            self.report(line_of(value), path, format!("value `{v}` must be at most {max}{why}"));
            None
        } else {
            Some(v)
        }
    }

    /// A required integer in `min..=max`.
    fn required_range(
        &mut self,
        value: &Option<Spanned<i64>>,
        parent_line: u64,
        parent: &str,
        name: &str,
        (min, max): (i64, i64),
    ) -> Option<i64> {
        let value = self.required(value, parent_line, parent, name)?;
        self.range(value, key(parent, name), min, max, "")
    }

    /// Reports the second occurrence of an id within its scope.
    fn unique(
        &mut self,
        seen: &mut HashMap<String, u64>,
        id: &str,
        value: &Option<Spanned<String>>,
        path: &str,
        what: &str,
    ) {
        let Some(spanned) = value else { return };
        let line = line_of(spanned);
        if let Some(first) = seen.get(id) {
            self.report(
                line,
                key(path, "id"),
                format!("duplicate {what} id `{}` (first declared on line {first})", show(id)),
            );
        } else {
            seen.insert(id.to_owned(), line);
        }
    }

    /// Validates the whole activity.
    fn activity(&mut self, raw: &RawFile, version: String) -> Parsed {
        let Some(activity) = raw.activity.as_ref() else {
            self.report(1, "activity".to_owned(), "missing required key `activity`".to_owned());
            return Parsed { activity: empty_activity(self.file, version), id_line: 1 };
        };
        let path = "activity";
        let line = line_of(activity);
        let a = &activity.value;
        let id = self.id(&a.id, line, path);
        let name = self.name(&a.name, line, path);
        let budget_cents = self.required_range(&a.budget_cents, line, path, "budget_cents", (1, BUDGET_CENTS_MAX));
        let info = ActivityInfo { id: &id, name: &name, budget_cents, version: &version };

        let mut walk = Walk::default();
        let mut award_types = Vec::new();
        if let Some(list) = self.required(&a.award_types, line, path, "award_types") {
            if list.value.is_empty() {
                self.report(
                    line_of(list),
                    key(path, "award_types"),
                    "award_types `[]` must list at least one award type".to_owned(),
                );
            }
            for (i, award_type) in list.value.iter().enumerate() {
                let at_path = format!("{path}.award_types[{i}]");
                award_types.push(self.award_type(award_type, &at_path, &info, &mut walk));
            }
        }

        let id_line = a.id.as_ref().map_or(line, line_of);
        Parsed {
            activity: Activity {
                id: id.clone(),
                name: name.clone(),
                budget_cents: budget_cents.unwrap_or_default(),
                restore_enabled: a.restore.as_ref().is_none_or(|restore| restore.value),
                award_types,
                scenes: walk.scenes,
                version: version.clone(),
                file: self.file.to_path_buf(),
            },
            id_line,
        }
    }

    /// Validates one award type.
    fn award_type(
        &mut self,
        raw: &Spanned<RawAwardType>,
        path: &str,
        info: &ActivityInfo<'_>,
        walk: &mut Walk,
    ) -> AwardType {
        let line = line_of(raw);
        let t = &raw.value;
        let id = self.id(&t.id, line, path);
        self.unique(&mut walk.award_type_ids, &id, &t.id, path, "award type");
        let name = self.name(&t.name, line, path);
        let mut awards = Vec::new();
        if let Some(list) = self.required(&t.awards, line, path, "awards") {
            if list.value.is_empty() {
                self.report(line_of(list), key(path, "awards"), "awards `[]` must list at least one award".to_owned());
            }
            for (j, award) in list.value.iter().enumerate() {
                let award_path = format!("{path}.awards[{j}]");
                awards.push(self.award(award, &award_path, &id, info, walk));
            }
        }
        AwardType { id, name, awards }
    }

    /// Validates one award and its scenes.
    fn award(
        &mut self,
        raw: &Spanned<RawAward>,
        path: &str,
        award_type: &str,
        info: &ActivityInfo<'_>,
        walk: &mut Walk,
    ) -> Award {
        let line = line_of(raw);
        let a = &raw.value;
        let id = self.id(&a.id, line, path);
        self.unique(&mut walk.award_ids, &id, &a.id, path, "award");
        let name = self.name(&a.name, line, path);
        let mut scene_ids = Vec::new();
        if let Some(list) = self.required(&a.scenes, line, path, "scenes") {
            if list.value.is_empty() {
                self.report(line_of(list), key(path, "scenes"), "scenes `[]` must list at least one scene".to_owned());
            }
            for (k, raw_scene) in list.value.iter().enumerate() {
                let scene_path = format!("{path}.scenes[{k}]");
                walk.scene_count += 1;
                if walk.scene_count == SCENES_PER_ACTIVITY_MAX + 1 {
                    self.report(
                        line_of(raw_scene),
                        scene_path.clone(),
                        format!(
                            "scene number `{}` exceeds the limit of {SCENES_PER_ACTIVITY_MAX} \
                             scenes per activity",
                            walk.scene_count
                        ),
                    );
                }
                let scene = self.scene(raw_scene, &scene_path, award_type, &id, info);
                self.unique(&mut walk.scene_ids, &scene.id, &raw_scene.value.id, &scene_path, "scene");
                scene_ids.push(scene.id.clone());
                walk.scenes.entry(scene.id.clone()).or_insert_with(|| Arc::new(scene));
            }
        }
        Award { id, name, scene_ids }
    }

    /// Validates one scene.
    fn scene(
        &mut self,
        raw: &Spanned<RawScene>,
        path: &str,
        award_type: &str,
        award_id: &str,
        info: &ActivityInfo<'_>,
    ) -> Scene {
        let line = line_of(raw);
        let s = &raw.value;
        let id = self.id(&s.id, line, path);
        let name = self.name(&s.name, line, path);
        let app_ids = self.app_ids(s, line, path);
        let amount = match self.required(&s.amount, line, path, "amount") {
            Some(amount) => self.amount(amount, &key(path, "amount")),
            None => AmountRule::Fixed { cents: 1 },
        };
        let bill_copy = s.bill_copy.as_ref().map(|b| self.bill_copy(b, &key(path, "bill_copy")));
        let rate_limit = s.rate_limit.as_ref().map(|r| self.rate_limit(r, &key(path, "rate_limit")));
        let inventory = s.inventory.as_ref().map(|i| self.inventory(i, &key(path, "inventory"), info.budget_cents));
        let compensation = s.compensation.as_ref().map(|c| self.compensation(c, &key(path, "compensation")));
        let reconciliation = s.reconciliation.as_ref().map(|r| self.reconciliation(r, &key(path, "reconciliation")));
        let plugins = s.plugins.as_ref().map(|p| self.plugins(p, &key(path, "plugins"))).unwrap_or_default();
        Scene {
            activity_id: info.id.to_owned(),
            activity_name: info.name.to_owned(),
            award_type: award_type.to_owned(),
            award_id: award_id.to_owned(),
            id,
            name,
            app_ids,
            amount,
            bill_copy,
            rate_limit,
            inventory,
            compensation,
            reconciliation,
            plugins,
            version: info.version.to_owned(),
        }
    }

    /// `app_ids`: non-empty, positive, no duplicates.
    fn app_ids(&mut self, s: &RawScene, line: u64, path: &str) -> Vec<i64> {
        let Some(list) = self.required(&s.app_ids, line, path, "app_ids") else {
            return Vec::new();
        };
        if list.value.is_empty() {
            self.report(line_of(list), key(path, "app_ids"), "app_ids `[]` must list at least one app id".to_owned());
        }
        let mut ids = Vec::with_capacity(list.value.len());
        for (i, app_id) in list.value.iter().enumerate() {
            let item = format!("{path}.app_ids[{i}]");
            if app_id.value <= 0 {
                self.report(line_of(app_id), item, format!("app id `{}` must be positive", app_id.value));
            } else if ids.contains(&app_id.value) {
                self.report(line_of(app_id), item, format!("duplicate app id `{}`", app_id.value));
            } else {
                ids.push(app_id.value);
            }
        }
        ids
    }

    /// `amount`: the kind decides which keys must and must not be present.
    fn amount(&mut self, raw: &Spanned<RawAmount>, path: &str) -> AmountRule {
        let line = line_of(raw);
        let a = &raw.value;
        let cap = " (the single red-packet cap)";
        let check = |checker: &mut Self, value: &Option<Spanned<i64>>, name: &str| {
            value.as_ref().and_then(|v| checker.range(v, key(path, name), 1, MAX_GRANT_CENTS, cap))
        };
        let cents = check(self, &a.cents, "cents");
        let min = check(self, &a.min_cents, "min_cents");
        let max = check(self, &a.max_cents, "max_cents");

        let Some(kind) = self.required(&a.kind, line, path, "kind") else {
            return AmountRule::Fixed { cents: 1 };
        };
        let kind_name = kind.value.as_str();
        match kind_name {
            "fixed" => {
                for (value, name) in [(&a.min_cents, "min_cents"), (&a.max_cents, "max_cents")] {
                    if let Some(v) = value {
                        self.report(
                            line_of(v),
                            key(path, name),
                            format!("key `{name}` is not allowed with kind `fixed`; use `cents`"),
                        );
                    }
                }
                if a.cents.is_none() {
                    self.report(line, key(path, "cents"), "key `cents` is required with kind `fixed`".to_owned());
                }
                AmountRule::Fixed { cents: cents.unwrap_or(1) }
            }
            "random" | "caller" => {
                if let Some(v) = &a.cents {
                    self.report(
                        line_of(v),
                        key(path, "cents"),
                        format!(
                            "key `cents` is not allowed with kind `{kind_name}`; use `min_cents` \
                             and `max_cents`"
                        ),
                    );
                }
                for (value, name) in [(&a.min_cents, "min_cents"), (&a.max_cents, "max_cents")] {
                    if value.is_none() {
                        self.report(line, key(path, name), format!("key `{name}` is required with kind `{kind_name}`"));
                    }
                }
                if let (Some(min_cents), Some(max_cents), Some(raw_max)) = (min, max, &a.max_cents)
                    && min_cents > max_cents
                {
                    self.report(
                        line_of(raw_max),
                        key(path, "max_cents"),
                        format!("max_cents `{max_cents}` is less than min_cents `{min_cents}`"),
                    );
                }
                let (min_cents, max_cents) = (min.unwrap_or(1), max.unwrap_or(1));
                if kind_name == "random" {
                    AmountRule::Random { min_cents, max_cents }
                } else {
                    AmountRule::Caller { min_cents, max_cents }
                }
            }
            other => {
                self.report(
                    line_of(kind),
                    key(path, "kind"),
                    format!("kind `{}` must be one of `fixed`, `random` or `caller`", show(other)),
                );
                AmountRule::Fixed { cents: 1 }
            }
        }
    }

    /// `bill_copy`: a template per locale, including the default locale, each well-formed.
    fn bill_copy(&mut self, raw: &Spanned<RawBillCopy>, path: &str) -> BillCopy {
        let line = line_of(raw);
        let b = &raw.value;
        let default_locale = self.required(&b.default_locale, line, path, "default_locale");
        let templates_raw = self.required(&b.templates, line, path, "templates");
        let mut templates = BTreeMap::new();
        if let Some(list) = templates_raw {
            if list.value.0.is_empty() {
                self.report(
                    line_of(list),
                    key(path, "templates"),
                    "templates `{}` must hold at least one locale".to_owned(),
                );
            }
            for (locale, template) in &list.value.0 {
                let template_path = format!("{path}.templates.{}", locale.value);
                let locale_ok = !locale.value.is_empty()
                    && locale.value.len() <= LOCALE_CHARS_MAX
                    && locale.value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !locale_ok {
                    self.report(
                        line_of(locale),
                        template_path.clone(),
                        format!(
                            "locale `{}` must be 1 to {LOCALE_CHARS_MAX} ascii letters, digits \
                             or `-`",
                            show(&locale.value)
                        ),
                    );
                }
                self.template(template, template_path);
                templates.insert(locale.value.clone(), template.value.clone());
            }
            if let Some(default) = default_locale
                && !list.value.0.is_empty()
                && !templates.contains_key(&default.value)
            {
                self.report(
                    line_of(default),
                    key(path, "default_locale"),
                    format!("default_locale `{}` has no template in `templates`", show(&default.value)),
                );
            }
        }
        BillCopy { default_locale: default_locale.map(|d| d.value.clone()).unwrap_or_default(), templates }
    }

    /// One template: 1..=256 characters, balanced braces, known placeholders only.
    fn template(&mut self, template: &Spanned<String>, path: String) {
        let line = line_of(template);
        let chars = template.value.chars().count();
        if chars == 0 || chars > TEMPLATE_CHARS_MAX {
            self.report(
                line,
                path.clone(),
                format!(
                    "template `{}` must be 1 to {TEMPLATE_CHARS_MAX} characters, got {chars}",
                    show(&template.value)
                ),
            );
        }
        let mut chars_before = 0;
        for piece in template_pieces(&template.value) {
            let position = chars_before + 1;
            match piece {
                Piece::Text(text) | Piece::Var(text) => chars_before += text.chars().count(),
                Piece::Unknown(text) => {
                    chars_before += text.chars().count();
                    self.report(
                        line,
                        path.clone(),
                        format!(
                            "unknown placeholder `{}`; known placeholders are {}",
                            show(text),
                            BILL_PLACEHOLDERS.iter().map(|p| format!("`{{{p}}}`")).collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
                Piece::Unbalanced(text) => {
                    chars_before += text.chars().count();
                    self.report(
                        line,
                        path.clone(),
                        format!("unbalanced `{text}` at character {position} of the template"),
                    );
                }
            }
        }
    }

    /// `rate_limit`: all four keys required.
    fn rate_limit(&mut self, raw: &Spanned<RawRateLimit>, path: &str) -> RateLimit {
        let line = line_of(raw);
        let r = &raw.value;
        let u32_max = i64::from(u32::MAX);
        let get = |checker: &mut Self, value, name, bounds| {
            checker.required_range(value, line, path, name, bounds).and_then(|v| u32::try_from(v).ok()).unwrap_or(1)
        };
        RateLimit {
            scene_per_second: get(self, &r.scene_per_second, "scene_per_second", (1, u32_max)),
            scene_burst: get(self, &r.scene_burst, "scene_burst", (1, u32_max)),
            user_max: get(self, &r.user_max, "user_max", (1, u32_max)),
            user_window_seconds: get(self, &r.user_window_seconds, "user_window_seconds", (1, USER_WINDOW_SECONDS_MAX)),
        }
    }

    /// `inventory`: at least one bound; the budget fits in the activity budget.
    fn inventory(&mut self, raw: &Spanned<RawInventory>, path: &str, activity_budget: Option<i64>) -> Inventory {
        let line = line_of(raw);
        let i = &raw.value;
        if i.count_max.is_none() && i.budget_cents.is_none() {
            self.report(line, path.to_owned(), "inventory must set `count_max`, `budget_cents` or both".to_owned());
        }
        let count_max = i
            .count_max
            .as_ref()
            .and_then(|v| self.range(v, key(path, "count_max"), 1, i64::MAX, "").and_then(|v| u64::try_from(v).ok()));
        let budget_cents = i.budget_cents.as_ref().and_then(|v| {
            let budget = self.range(v, key(path, "budget_cents"), 1, BUDGET_CENTS_MAX, "")?;
            match activity_budget {
                Some(activity) if budget > activity => {
                    self.report(
                        line_of(v),
                        key(path, "budget_cents"),
                        format!(
                            "budget_cents `{budget}` exceeds the activity budget_cents \
                             `{activity}`"
                        ),
                    );
                    None
                }
                _ => Some(budget),
            }
        });
        Inventory { count_max, budget_cents }
    }

    /// `compensation`: 1 <= retry_initial_ms <= retry_max_ms <= one hour.
    fn compensation(&mut self, raw: &Spanned<RawCompensation>, path: &str) -> Compensation {
        let line = line_of(raw);
        let c = &raw.value;
        let initial = self.required_range(&c.retry_initial_ms, line, path, "retry_initial_ms", (1, RETRY_MAX_MS_MAX));
        let max = self.required_range(&c.retry_max_ms, line, path, "retry_max_ms", (1, RETRY_MAX_MS_MAX));
        if let (Some(initial), Some(max), Some(raw_max)) = (initial, max, &c.retry_max_ms)
            && max < initial
        {
            self.report(
                line_of(raw_max),
                key(path, "retry_max_ms"),
                format!("retry_max_ms `{max}` is less than retry_initial_ms `{initial}`"),
            );
        }
        let as_u64 = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(1);
        Compensation { retry_initial_ms: as_u64(initial), retry_max_ms: as_u64(max) }
    }

    /// `plugins`: one block per capability.
    fn plugins(&mut self, raw: &Spanned<RawPlugins>, path: &str) -> ScenePlugins {
        let p = &raw.value;
        let blocks = [
            (Capability::BillCopy, &p.bill_copy),
            (Capability::RateLimit, &p.rate_limit),
            (Capability::Inventory, &p.inventory),
            (Capability::Compensation, &p.compensation),
            (Capability::Reconciliation, &p.reconciliation),
        ];
        let specs = blocks
            .into_iter()
            .filter_map(|(capability, block)| {
                block.as_ref().and_then(|b| self.plugin(capability, b, &key(path, capability.yaml_key())))
            })
            .collect();
        ScenePlugins { specs, ..ScenePlugins::default() }
    }

    /// One plugin block: a path, a pinned sha256, a failure policy, optional bounds within the
    /// host's maxima, and settings.
    /// A plugin block's numeric bound `name`: 1 to `max` (the host's maximum), `default` when
    /// absent.
    fn bound(&mut self, value: &Option<Spanned<i64>>, path: &str, name: &str, max: u64, default: u64) -> Option<u64> {
        match value {
            Some(value) => self.range(value, key(path, name), 1, max as i64, " (the host's maximum)").map(|v| v as u64),
            None => Some(default),
        }
    }

    fn plugin(&mut self, capability: Capability, raw: &Spanned<RawPlugin>, path: &str) -> Option<PluginSpec> {
        let line = line_of(raw);
        let p = &raw.value;
        let file = self.required(&p.path, line, path, "path").and_then(|value| {
            if value.value.trim().is_empty() {
                self.report(line_of(value), key(path, "path"), "path must not be empty".into());
                return None;
            }
            let relative = Path::new(&value.value);
            Some(match self.file.parent() {
                Some(dir) if relative.is_relative() => dir.join(relative),
                _ => relative.to_path_buf(),
            })
        });
        let sha256 = self.required(&p.sha256, line, path, "sha256").and_then(|value| {
            let parsed = parse_sha256(&value.value);
            if parsed.is_none() {
                self.report(
                    line_of(value),
                    key(path, "sha256"),
                    format!(
                        "sha256 `{}` must be 64 hexadecimal digits (`sha256sum FILE` prints it)",
                        show(&value.value)
                    ),
                );
            }
            parsed
        });
        let on_failure = self.required(&p.on_failure, line, path, "on_failure").and_then(|value| {
            let parsed = FailurePolicy::parse(&value.value);
            if parsed.is_none() {
                self.report(
                    line_of(value),
                    key(path, "on_failure"),
                    format!("on_failure `{}` must be one of fail_closed, fail_open, builtin", show(&value.value)),
                );
            }
            parsed
        });
        let deadline_ms = self.bound(
            &p.deadline_ms,
            path,
            "deadline_ms",
            plugin_limits::DEADLINE_MS_MAX,
            plugin_limits::DEADLINE_MS_DEFAULT,
        );
        let instructions_max = self.bound(
            &p.instructions_max,
            path,
            "instructions_max",
            plugin_limits::INSTRUCTIONS_MAX_MAX,
            plugin_limits::INSTRUCTIONS_MAX_DEFAULT,
        );
        let memory_mb =
            self.bound(&p.memory_mb, path, "memory_mb", plugin_limits::MEMORY_MB_MAX, plugin_limits::MEMORY_MB_DEFAULT);
        let mut settings: Vec<(String, String)> = Vec::new();
        if let Some(raw_settings) = &p.settings {
            let settings_path = key(path, "settings");
            if raw_settings.value.0.len() > plugin_limits::SETTINGS_MAX {
                self.report(
                    line_of(raw_settings),
                    settings_path.clone(),
                    format!("{} settings, at most {}", raw_settings.value.0.len(), plugin_limits::SETTINGS_MAX),
                );
            }
            for (name, value) in &raw_settings.value.0 {
                let entry_path = key(&settings_path, &name.value);
                if name.value.is_empty() || name.value.len() > plugin_limits::SETTING_BYTES_MAX {
                    self.report(line_of(name), entry_path.clone(), "setting names are 1 to 1024 bytes".into());
                }
                if value.value.0.len() > plugin_limits::SETTING_BYTES_MAX {
                    self.report(line_of(value), entry_path.clone(), "setting values are at most 1024 bytes".into());
                }
                if settings.iter().any(|(existing, _)| *existing == name.value) {
                    self.report(line_of(name), entry_path, format!("duplicate setting `{}`", show(&name.value)));
                    continue;
                }
                settings.push((name.value.clone(), value.value.0.clone()));
            }
        }
        Some(PluginSpec {
            capability,
            path: file?,
            sha256: sha256?,
            on_failure: on_failure?,
            deadline_ms: deadline_ms?,
            instructions_max: instructions_max?,
            memory_mb: memory_mb?,
            settings,
            line,
            sha256_line: p.sha256.as_ref().map_or(line, line_of),
            key_path: path.to_owned(),
        })
    }

    /// `reconciliation`: a non-negative tolerance.
    fn reconciliation(&mut self, raw: &Spanned<RawReconciliation>, path: &str) -> Reconciliation {
        let line = line_of(raw);
        let tolerance =
            self.required_range(&raw.value.tolerance_cents, line, path, "tolerance_cents", (0, BUDGET_CENTS_MAX));
        Reconciliation { tolerance_cents: tolerance.unwrap_or_default() }
    }
}

/// Ids seen so far in the activity, and the scenes built so far.
#[derive(Default)]
struct Walk {
    award_type_ids: HashMap<String, u64>,
    award_ids: HashMap<String, u64>,
    scene_ids: HashMap<String, u64>,
    scene_count: usize,
    scenes: BTreeMap<String, Arc<Scene>>,
}

/// Placeholder activity returned (and discarded) when the file has no `activity` key.
fn empty_activity(file: &Path, version: String) -> Activity {
    Activity {
        id: String::new(),
        name: String::new(),
        budget_cents: 0,
        restore_enabled: true,
        award_types: Vec::new(),
        scenes: BTreeMap::new(),
        version,
        file: file.to_path_buf(),
    }
}

/// Parses 64 hex digits.
fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}
