//! What a scene declares about a plugin: the capability it takes over, the failure policy that
//! decides when it fails, and the whole `plugins.<capability>` block as the validator read it.

use std::path::PathBuf;

/// The five capabilities a plugin can take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Bill copy: the text on the user's bill.
    BillCopy,
    /// Rate limiting: allow or reject a grant request.
    RateLimit,
    /// Inventory: the amount of a grant, or out of stock.
    Inventory,
    /// Compensation: what to do after a step failed.
    Compensation,
    /// Reconciliation: findings and repairs for a scene's books.
    Reconciliation,
}

impl Capability {
    /// All five, in YAML order.
    pub const ALL: [Capability; 5] = [
        Capability::BillCopy,
        Capability::RateLimit,
        Capability::Inventory,
        Capability::Compensation,
        Capability::Reconciliation,
    ];

    /// The YAML key (`bill_copy`, …).
    pub fn yaml_key(self) -> &'static str {
        match self {
            Capability::BillCopy => "bill_copy",
            Capability::RateLimit => "rate_limit",
            Capability::Inventory => "inventory",
            Capability::Compensation => "compensation",
            Capability::Reconciliation => "reconciliation",
        }
    }

    /// The name used by the CLI and the WIT interface (`bill-copy`, …).
    pub fn kind(self) -> &'static str {
        match self {
            Capability::BillCopy => "bill-copy",
            Capability::RateLimit => "rate-limit",
            Capability::Inventory => "inventory",
            Capability::Compensation => "compensation",
            Capability::Reconciliation => "reconciliation",
        }
    }

    /// Parses [`Capability::kind`] or [`Capability::yaml_key`].
    pub fn parse(text: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.kind() == text || c.yaml_key() == text)
    }
}

/// What happens when a scene's plugin fails (traps, runs past its deadline, exceeds its memory,
/// returns a `plugin-error` or an invalid answer, or could not be loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Refuse the request with the stable code `plugin_failed`.
    FailClosed,
    /// Skip the step: no bill text, no rate limit, the scene's amount rule, no retry decision
    /// (the token waits for funding), no plugin findings.
    FailOpen,
    /// Let the host's native built-in decide, as if the scene had no plugin.
    Builtin,
}

impl FailurePolicy {
    /// Parses the YAML value.
    pub fn parse(text: &str) -> Option<FailurePolicy> {
        match text {
            "fail_closed" => Some(FailurePolicy::FailClosed),
            "fail_open" => Some(FailurePolicy::FailOpen),
            "builtin" => Some(FailurePolicy::Builtin),
            _ => None,
        }
    }
}

/// A plugin as a scene's YAML declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Which capability it serves.
    pub capability: Capability,
    /// The `.wasm` file, resolved against the scene file's directory.
    pub path: PathBuf,
    /// The pinned sha256 of the file.
    pub sha256: [u8; 32],
    /// What a failure does.
    pub on_failure: FailurePolicy,
    /// Per-call deadline.
    pub deadline_ms: u64,
    /// Wasm operators a call may run (its fuel).
    pub instructions_max: u64,
    /// Linear memory cap per instance.
    pub memory_mb: u64,
    /// Handed to the plugin in `call-context.settings`.
    pub settings: Vec<(String, String)>,
    /// Where in the YAML the block is (line), for errors.
    pub line: u64,
    /// The line of its `sha256`, where a mismatch is reported.
    pub sha256_line: u64,
    /// The key path of the block, e.g. `activity.award_types[0]….plugins.bill_copy`.
    pub key_path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a capability parses from both its CLI/WIT name and its YAML key, and from nothing else.
    #[test]
    fn capabilities_parse_from_kind_and_yaml_key() {
        for capability in Capability::ALL {
            assert_eq!(Capability::parse(capability.kind()), Some(capability));
            assert_eq!(Capability::parse(capability.yaml_key()), Some(capability));
        }
        assert_eq!(Capability::parse("bill-copy"), Some(Capability::BillCopy));
        assert_eq!(Capability::parse("rate_limit"), Some(Capability::RateLimit));
        assert_eq!(Capability::parse("Inventory"), None);
        assert_eq!(Capability::parse(""), None);
    }

    // Proves the three failure policies parse from their YAML values only, and serialise back
    // to the same values (the `/v1/plugins` view shows them).
    #[test]
    fn failure_policies_parse_from_their_yaml_values() {
        for (text, policy) in [
            ("fail_closed", FailurePolicy::FailClosed),
            ("fail_open", FailurePolicy::FailOpen),
            ("builtin", FailurePolicy::Builtin),
        ] {
            assert_eq!(FailurePolicy::parse(text), Some(policy));
            assert_eq!(serde_json::to_value(policy).expect("serialise"), serde_json::json!(text));
        }
        assert_eq!(FailurePolicy::parse("fail-open"), None);
        assert_eq!(FailurePolicy::parse("FAIL_CLOSED"), None);
    }
}
