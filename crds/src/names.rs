//! Names of the children an MLModel gets, and the admission rule that keeps them from colliding.
//!
//! An MLModel `x` creates a Deployment and a Service `x`, a canary Deployment `x-canary` and, in
//! Gateway mode, Services `x-stable` and `x-canary`. Refusing MLModel names that end in one of
//! those suffixes means no model's generated name can be another model's name; the operator's
//! ownership check (it never changes an object another owner controls) is the safety net.

/// Suffix of the canary Deployment (and of the canary's Service in Gateway mode).
pub const CANARY_SUFFIX: &str = "-canary";
/// Suffix of the stable track's Service in Gateway mode.
pub const STABLE_SUFFIX: &str = "-stable";
/// Every suffix the operator appends to an MLModel's name.
pub const GENERATED_SUFFIXES: &[&str] = &[CANARY_SUFFIX, STABLE_SUFFIX];
/// Longest MLModel name: a Service name is a DNS-1035 label (at most 63 characters), and the
/// longest suffix we append has 7.
pub const MAX_NAME_LENGTH: usize = 63 - CANARY_SUFFIX.len();

/// The CEL rule on the MLModel's `metadata.name`, checked when an MLModel is created (with
/// `optionalOldSelf`, `oldSelf` has a value only on updates): a name never changes, and an MLModel
/// stored before the rule existed must stay writable (its status too) so it can be replaced.
/// Keep it in step with [`name_problem`].
pub const NAME_CEL_RULE: &str = "oldSelf.hasValue() || (size(self.metadata.name) <= 56 \
    && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') \
    && !self.metadata.name.endsWith('-canary') && !self.metadata.name.endsWith('-stable'))";
/// The message of [`NAME_CEL_RULE`].
pub const NAME_CEL_MESSAGE: &str = "metadata.name must be a DNS-1035 label of at most 56 characters (lowercase \
    letters, digits and '-', starting with a letter, ending with a letter or digit) and must not end in -canary \
    or -stable: the operator names the MLModel's children NAME, NAME-canary and NAME-stable";

/// Why `name` cannot be an MLModel's name, if it cannot: the same rule as [`NAME_CEL_RULE`].
pub fn name_problem(name: &str) -> Option<&'static str> {
    let dns1035 = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let generated = GENERATED_SUFFIXES.iter().any(|s| name.ends_with(s));
    (name.len() > MAX_NAME_LENGTH || !dns1035 || generated).then_some(NAME_CEL_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_refuses_what_would_collide_or_not_fit() {
        for ok in ["iris", "a", "fraud-v2", &"a".repeat(56), "canary", "x-canary2"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in ["x-canary", "x-stable", "my.model", "1st", "Iris", "x-", &"a".repeat(57), ""] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn the_cel_rule_states_the_same_bounds() {
        assert!(NAME_CEL_RULE.contains(&format!("<= {MAX_NAME_LENGTH}")));
        for s in GENERATED_SUFFIXES {
            assert!(NAME_CEL_RULE.contains(&format!("endsWith('{s}')")), "{s}");
        }
    }
}
