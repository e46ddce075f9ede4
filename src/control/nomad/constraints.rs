//! OpenFaaS placement constraints (`attr op value` strings) to Nomad job `Constraints`.
//!
//! OpenFaaS leaves the constraint syntax to the provider; users write Docker Swarm's form
//! (`node.platform.os == linux`) or, on Nomad, Nomad's own (`${attr.kernel.name} = linux`).
//! Both are accepted. The mapping, stated once:
//!
//! **Attribute** (the `LTarget`):
//! | written | Nomad `LTarget` |
//! |---|---|
//! | `${...}` | verbatim (the inside must be one Nomad resolves: `attr.X`, `meta.X` or `device.X` with X of `[A-Za-z0-9_.-]`, or `node.unique.id`, `node.datacenter`, `node.unique.name`, `node.class`, `node.pool`) |
//! | `node.platform.os` | `${attr.kernel.name}` |
//! | `node.platform.arch` | `${attr.cpu.arch}`, and the value `x86_64` -> `amd64`, `aarch64` -> `arm64` |
//! | `node.hostname` | `${attr.unique.hostname}` |
//! | `node.id` | `${node.unique.id}` |
//! | `node.labels.K`, `engine.labels.K` | `${meta.K}` |
//! | `datacenter` | `${node.datacenter}` |
//! | `attr.X`, `meta.X`, `device.X`, `node.X` (other `node.` fields: `datacenter`, `class`, `pool`, `unique.id`, `unique.name`) | `${...}` around it |
//!
//! Nothing else is interpolated by Nomad: 1.11.2+ refuses a job naming any other `${node.*}`
//! (`${node.region}` included: "unsupported attribute") and older schedulers can never
//! satisfy it, so it is refused here, at deploy, with a 400 that lists what Nomad resolves.
//!
//! **Operator** (the `Operand`): `==` and `=` -> `=`; `!=`, `<`, `<=`, `>`, `>=` as written;
//! the word operators `regexp`, `version`, `semver`, `set_contains`, `set_contains_all`,
//! `set_contains_any` as written (they need a value); `is_set` and `is_not_set` take no value.
//! Symbolic operators may be written without spaces (`node.platform.os==linux`); word
//! operators are separated by whitespace.
//!
//! **Value** (the `RTarget`): the rest of the string, trimmed; one pair of surrounding double
//! quotes is removed. It may contain spaces (`version >= 1.2, < 2.0`).
//!
//! Anything else is a [`ConstraintError`] that quotes the constraint and says what was wrong;
//! nothing is guessed or dropped silently. Pure functions only.

use serde_json::{json, Value};
use thiserror::Error;

/// A constraint this module cannot translate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("constraint {constraint:?}: {reason}")]
pub struct ConstraintError {
    pub constraint: String,
    pub reason: String,
}

/// One Nomad constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NomadConstraint {
    pub(crate) l_target: String,
    pub(crate) operand: &'static str,
    pub(crate) r_target: String,
}

/// Operators written with symbols, longest first so `==` wins over `=`.
const SYMBOL_OPS: [(&str, &str); 7] = [
    ("==", "="),
    ("!=", "!="),
    ("<=", "<="),
    (">=", ">="),
    ("=", "="),
    ("<", "<"),
    (">", ">"),
];
/// Word operators that take a value.
const WORD_OPS: [&str; 6] = [
    "regexp",
    "version",
    "semver",
    "set_contains",
    "set_contains_all",
    "set_contains_any",
];
/// Word operators without a value.
const UNARY_OPS: [&str; 2] = ["is_set", "is_not_set"];
/// Nomad node fields usable as `${node.X}` (Nomad 1.11's `resolveTarget`).
const NODE_FIELDS: [&str; 5] = ["datacenter", "class", "pool", "unique.id", "unique.name"];

// === impl NomadConstraint ===

impl NomadConstraint {
    /// `{"LTarget", "RTarget", "Operand"}` as Nomad's JSON API spells them.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "LTarget": self.l_target,
            "RTarget": self.r_target,
            "Operand": self.operand,
        })
    }
}

/// Translates every constraint, in order.
pub(crate) fn translate_all(
    constraints: &[String],
) -> Result<Vec<NomadConstraint>, ConstraintError> {
    constraints.iter().map(|c| translate(c)).collect()
}

/// Translates one `attr op value` string following the mapping in the module docs.
pub(crate) fn translate(constraint: &str) -> Result<NomadConstraint, ConstraintError> {
    let err = |reason: &str| ConstraintError {
        constraint: constraint.to_string(),
        reason: reason.to_string(),
    };
    let s = constraint.trim();
    if s.is_empty() {
        return Err(err("is empty; expected `attribute operator value`"));
    }

    let (attr, operand, value) = split(s).ok_or_else(|| {
        err(
            "no operator found; expected one of == = != < <= > >= regexp version semver \
             set_contains set_contains_all set_contains_any is_set is_not_set",
        )
    })?;
    if attr.is_empty() {
        return Err(err("the attribute is missing"));
    }
    if attr.chars().any(char::is_whitespace) {
        return Err(err("the attribute must not contain spaces"));
    }
    let value = unquote(value.trim());
    let unary = UNARY_OPS.contains(&operand);
    if unary && !value.is_empty() {
        return Err(err(&format!("{operand} takes no value")));
    }
    if !unary && value.is_empty() {
        return Err(err(&format!("{operand} needs a value")));
    }

    let (l_target, arch) = l_target(attr).ok_or_else(|| {
        err(
            "unknown attribute; Nomad resolves ${attr.X}, ${meta.X}, ${device.X}, \
             ${node.unique.id}, ${node.datacenter}, ${node.unique.name}, ${node.class} and \
             ${node.pool}; also accepted: attr.X, meta.X, device.X, node.labels.X, \
             node.platform.os, node.platform.arch, node.hostname, node.id, datacenter",
        )
    })?;
    let r_target = if arch && (operand == "=" || operand == "!=") {
        match value {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            v => v,
        }
    } else {
        value
    };
    Ok(NomadConstraint {
        l_target,
        operand,
        r_target: r_target.to_string(),
    })
}

/// (attribute, Nomad operand, raw value).
fn split(s: &str) -> Option<(&str, &'static str, &str)> {
    // Word operators: `attr word [value]`, separated by whitespace.
    if let Some(ws) = s.find(char::is_whitespace) {
        let attr = &s[..ws];
        let rest = s[ws..].trim_start();
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..word_end];
        if let Some(op) = WORD_OPS
            .iter()
            .chain(UNARY_OPS.iter())
            .find(|&&w| w == word)
        {
            return Some((attr, op, &rest[word_end..]));
        }
    }
    // Symbolic operators: the earliest occurrence, longest match at that position.
    for (i, _) in s.char_indices() {
        for (sym, op) in SYMBOL_OPS {
            if s[i..].starts_with(sym) {
                return Some((s[..i].trim(), op, &s[i + sym.len()..]));
            }
        }
    }
    None
}

fn unquote(v: &str) -> &str {
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// The Nomad `LTarget`, and whether the attribute is the CPU architecture (value mapping).
fn l_target(attr: &str) -> Option<(String, bool)> {
    if let Some(inner) = attr.strip_prefix("${").and_then(|a| a.strip_suffix('}')) {
        return valid_interpolation(inner).then(|| (attr.to_string(), inner == "attr.cpu.arch"));
    }
    let wrapped = |inner: &str| valid_interpolation(inner).then(|| format!("${{{inner}}}"));
    let mapped = match attr {
        "node.platform.os" => Some("${attr.kernel.name}".to_string()),
        "node.platform.arch" => return Some(("${attr.cpu.arch}".to_string(), true)),
        "node.hostname" => Some("${attr.unique.hostname}".to_string()),
        "node.id" => Some("${node.unique.id}".to_string()),
        "datacenter" => Some("${node.datacenter}".to_string()),
        _ => None,
    };
    if let Some(m) = mapped {
        return Some((m, false));
    }
    if let Some(key) = attr
        .strip_prefix("node.labels.")
        .or_else(|| attr.strip_prefix("engine.labels."))
    {
        return wrapped(&format!("meta.{key}")).map(|m| (m, false));
    }
    if let Some(field) = attr.strip_prefix("node.") {
        return NODE_FIELDS
            .contains(&field)
            .then(|| (format!("${{{attr}}}"), false));
    }
    if attr.starts_with("attr.") || attr.starts_with("meta.") || attr.starts_with("device.") {
        return wrapped(attr).map(|m| (m, attr == "attr.cpu.arch"));
    }
    None
}

/// What Nomad resolves inside `${...}`: `attr.X`, `meta.X` or `device.X` with X of
/// `[A-Za-z0-9_.-]+`, or one of the [`NODE_FIELDS`] after `node.`.
fn valid_interpolation(inner: &str) -> bool {
    if let Some(field) = inner.strip_prefix("node.") {
        return NODE_FIELDS.contains(&field);
    }
    let rest = ["attr.", "meta.", "device."]
        .iter()
        .find_map(|p| inner.strip_prefix(p));
    match rest {
        Some(r) => {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks each `(written, (LTarget, Operand, RTarget))` row.
    fn check(rows: &[(&str, (&str, &str, &str))]) {
        for (written, want) in rows {
            let c = translate(written).unwrap_or_else(|e| panic!("{e}"));
            let got = (c.l_target.as_str(), c.operand, c.r_target.as_str());
            assert_eq!(got, *want, "{written}");
        }
    }

    #[test]
    fn swarm_forms_map_to_nomad_attributes() {
        check(&[
            (
                "node.platform.os == linux",
                ("${attr.kernel.name}", "=", "linux"),
            ),
            (
                "node.platform.arch == x86_64",
                ("${attr.cpu.arch}", "=", "amd64"),
            ),
            (
                "node.platform.arch != aarch64",
                ("${attr.cpu.arch}", "!=", "arm64"),
            ),
            (
                "node.hostname==worker-1",
                ("${attr.unique.hostname}", "=", "worker-1"),
            ),
            ("node.labels.gpu == true", ("${meta.gpu}", "=", "true")),
            ("node.id != abc", ("${node.unique.id}", "!=", "abc")),
            ("datacenter = dc2", ("${node.datacenter}", "=", "dc2")),
            ("node.class = \"fast\"", ("${node.class}", "=", "fast")),
        ]);
    }

    #[test]
    fn nomad_forms_pass_through() {
        check(&[
            (
                "${attr.kernel.name} = linux",
                ("${attr.kernel.name}", "=", "linux"),
            ),
            (
                "${attr.kernel.version} version >= 5.4, < 7",
                ("${attr.kernel.version}", "version", ">= 5.4, < 7"),
            ),
            (
                "${attr.os.name} regexp ^(ubuntu|debian)$",
                ("${attr.os.name}", "regexp", "^(ubuntu|debian)$"),
            ),
            ("meta.rack is_set", ("${meta.rack}", "is_set", "")),
            (
                "attr.driver.docker is_not_set",
                ("${attr.driver.docker}", "is_not_set", ""),
            ),
            (
                "${meta.tags} set_contains_any a,b",
                ("${meta.tags}", "set_contains_any", "a,b"),
            ),
            (
                "attr.cpu.numcores >= 4",
                ("${attr.cpu.numcores}", ">=", "4"),
            ),
            (
                "${attr.cpu.arch} = x86_64",
                ("${attr.cpu.arch}", "=", "amd64"),
            ),
            ("${node.pool} = gpu", ("${node.pool}", "=", "gpu")),
            ("node.class == batch", ("${node.class}", "=", "batch")),
            (
                "device.attr.memory >= 8",
                ("${device.attr.memory}", ">=", "8"),
            ),
        ]);
    }

    #[test]
    fn invalid_constraints_are_errors() {
        for bad in [
            "",
            "linux",
            "node.platform.os",
            "node.platform.os ==",
            "== linux",
            "foo.bar == x",
            "node.wat == x",
            "${attr.kernel.name = linux",
            "${env.HOME} = x",
            "${attr.a}} = x",
            "meta.rack is_set yes",
            "${attr.x y} = z",
            "meta. = x",
            // Nomad 1.11.2+ refuses these at registration ("unsupported attribute").
            "node.region == eu",
            "${node.region} = eu",
            "${node.name} = a",
            "${unique.id} = a",
        ] {
            let e = translate(bad).unwrap_err();
            assert_eq!(e.constraint, bad);
            assert!(e.to_string().starts_with("constraint "), "{e}");
        }
    }

    #[test]
    fn json_uses_nomad_field_names() {
        let v = translate("node.platform.os == linux").unwrap().to_json();
        assert_eq!(
            v,
            json!({"LTarget": "${attr.kernel.name}", "RTarget": "linux", "Operand": "="})
        );
    }

    proptest::proptest! {
        #![proptest_config(crate::control::nomad::fixed_seed_proptest())]
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = translate(&s);
        }
    }
}
