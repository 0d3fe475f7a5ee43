//! Bill copy: the per-locale templates of the text on a user's bill, how a template is split
//! into text and placeholders (the validator checks the same pieces), and how it is rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Placeholders a bill copy template may use, each replaced by [`BillCopy::render`].
pub const BILL_PLACEHOLDERS: [&str; 6] =
    ["amount_yuan", "amount_cents", "rain_id", "stage", "scene_name", "activity_name"];

/// The bill text a user sees for a grant, per locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillCopy {
    /// The locale used when the requested one has no template; always a key of `templates`.
    pub default_locale: String,
    /// Locale → template. Templates use the placeholders listed in [`BILL_PLACEHOLDERS`].
    pub templates: BTreeMap<String, String>,
}

impl BillCopy {
    /// Renders the template for `locale` (falls back to `default_locale`).
    ///
    /// The locale is matched exactly first, then case-insensitively, then by its primary
    /// language (`en-US` uses an `en` template), and finally `default_locale` is used, so a user
    /// always gets a bill line. Placeholders are replaced from `vars`; `{amount_yuan}` is the
    /// amount with two decimals (888 cents → `8.88`). Validated templates contain only known,
    /// balanced placeholders; anything else is copied literally rather than failing a grant.
    #[must_use]
    pub fn render(&self, locale: Option<&str>, vars: &BillVars<'_>) -> String {
        let template = locale
            .and_then(|wanted| self.find_template(wanted))
            .or_else(|| self.templates.get(&self.default_locale))
            .map_or("", String::as_str);
        let mut out = String::with_capacity(template.len() + 16);
        for piece in template_pieces(template) {
            match piece {
                Piece::Text(text) | Piece::Unknown(text) | Piece::Unbalanced(text) => {
                    out.push_str(text);
                }
                Piece::Var(placeholder) => {
                    let name = placeholder.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(placeholder);
                    // Writing to a String cannot fail.
                    let _ = match name {
                        "amount_yuan" => write!(out, "{}", yuan(vars.amount_cents)),
                        "amount_cents" => write!(out, "{}", vars.amount_cents),
                        "rain_id" => write!(out, "{}", vars.rain_id),
                        "stage" => write!(out, "{}", vars.stage),
                        "scene_name" => write!(out, "{}", vars.scene_name),
                        _ => write!(out, "{}", vars.activity_name),
                    };
                }
            }
        }
        out
    }

    /// Looks up the template for a requested locale without the default fallback.
    fn find_template(&self, wanted: &str) -> Option<&String> {
        if let Some(found) = self.templates.get(wanted) {
            return Some(found);
        }
        let ci = |want: &str| {
            self.templates.iter().find(|(locale, _)| locale.eq_ignore_ascii_case(want)).map(|(_, template)| template)
        };
        ci(wanted).or_else(|| {
            let primary = wanted.split(['-', '_']).next()?;
            if primary.len() < wanted.len() { ci(primary) } else { None }
        })
    }
}

/// The values substituted into a bill copy template for one grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillVars<'a> {
    /// The granted amount in cents (`{amount_cents}`, and `{amount_yuan}` in yuan).
    pub amount_cents: i64,
    /// The red-packet rain the grant belongs to (`{rain_id}`).
    pub rain_id: i32,
    /// The stage within the rain (`{stage}`).
    pub stage: u32,
    /// The scene's display name (`{scene_name}`).
    pub scene_name: &'a str,
    /// The activity's display name (`{activity_name}`).
    pub activity_name: &'a str,
}

/// Formats cents as yuan with two decimals (888 → `8.88`, 5 → `0.05`, -150 → `-1.50`).
fn yuan(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// A piece of a bill copy template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// A known placeholder, with its braces.
    Var(&'a str),
    /// An unknown placeholder, with its braces.
    Unknown(&'a str),
    /// A brace without its partner.
    Unbalanced(&'a str),
}

/// Splits a template into literal text and placeholders. `{name}` is a placeholder; a `{`
/// without a later `}` (or with another `{` first) and a `}` without a `{` are unbalanced.
pub(super) fn template_pieces(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(at) = rest.find(['{', '}']) else {
            pieces.push(Piece::Text(rest));
            break;
        };
        if at > 0 {
            pieces.push(Piece::Text(&rest[..at]));
        }
        rest = &rest[at..];
        if rest.starts_with('}') {
            pieces.push(Piece::Unbalanced(&rest[..1]));
            rest = &rest[1..];
            continue;
        }
        // `rest` starts with `{`.
        match rest[1..].find(['{', '}']) {
            Some(end) if rest.as_bytes().get(end + 1) == Some(&b'}') => {
                let name = &rest[1..end + 1];
                let placeholder = &rest[..end + 2];
                if BILL_PLACEHOLDERS.contains(&name) {
                    pieces.push(Piece::Var(placeholder));
                } else {
                    pieces.push(Piece::Unknown(placeholder));
                }
                rest = &rest[end + 2..];
            }
            _ => {
                pieces.push(Piece::Unbalanced(&rest[..1]));
                rest = &rest[1..];
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that rendering formats yuan with two decimals, fills every placeholder and
    /// falls back from an unknown or missing locale to the default one.
    #[test]
    fn bill_copy_render() {
        let bill = BillCopy {
            default_locale: "zh-CN".to_owned(),
            templates: BTreeMap::from([
                ("zh-CN".to_owned(), "第{rain_id}场 获得{amount_yuan}元".to_owned()),
                (
                    "en".to_owned(),
                    "{activity_name}/{scene_name} #{rain_id}.{stage}: ¥{amount_yuan} ({amount_cents})".to_owned(),
                ),
            ]),
        };
        let vars =
            |amount_cents| BillVars { amount_cents, rain_id: 3, stage: 2, scene_name: "eve", activity_name: "spring" };
        assert_eq!(bill.render(Some("zh-CN"), &vars(888)), "第3场 获得8.88元");
        assert_eq!(bill.render(Some("zh-CN"), &vars(5)), "第3场 获得0.05元");
        assert_eq!(bill.render(Some("zh-CN"), &vars(100)), "第3场 获得1.00元");
        assert_eq!(bill.render(Some("en"), &vars(888)), "spring/eve #3.2: ¥8.88 (888)");
        assert_eq!(bill.render(Some("en-US"), &vars(5)), "spring/eve #3.2: ¥0.05 (5)");
        assert_eq!(bill.render(Some("fr"), &vars(888)), "第3场 获得8.88元");
        assert_eq!(bill.render(None, &vars(20_000_000)), "第3场 获得200000.00元");
        assert_eq!(yuan(-150), "-1.50");
        assert_eq!(yuan(i64::MIN), "-92233720368547758.08");

        // A hand-built copy with broken templates renders literally instead of failing.
        let broken = BillCopy {
            default_locale: "en".to_owned(),
            templates: BTreeMap::from([("en".to_owned(), "}{x} {amount_cents".to_owned())]),
        };
        assert_eq!(broken.render(None, &vars(1)), "}{x} {amount_cents");
    }
}
