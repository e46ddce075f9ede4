//! Nomad Variables bodies (`/v1/var/:path`, `/v1/vars`; Nomad 1.4+, locks 1.7+), shapes per
//! `../shared/fixtures/nomad-variables`.
//!
//! - [`VariableMetadata`]: what a list returns and what every full variable starts with;
//!   `Lock` only when the server shows it (management tokens, ACLs off, lock operations).
//! - [`Variable`]: metadata plus `Items` (string to string, left out when empty, as Go's
//!   `omitempty` does).
//! - [`VariableLock`]: `ID`, `TTL`, `LockDelay`. The two durations travel as Go duration
//!   strings (`"15s"`, `"1m0s"`; zero as `""`) and are accepted as such a string or as a
//!   JSON number of nanoseconds, as the server's own (Un)MarshalJSON does. A bare number in
//!   a string (`"15"`) is refused as Go's `time.ParseDuration` refuses it (`"0"` excepted).
//!
//! Parsing is lenient like the rest of [`super`]: absent or `null` fields read as zero.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// A variable's items: a flat map, every value a string.
pub type Items = BTreeMap<String, String>;

lenient! {
    /// `GET /v1/vars` element, and the top of every full [`Variable`].
    pub struct VariableMetadata {
        pub namespace: String,
        pub path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub lock: Option<VariableLock>,
        pub create_index: u64,
        /// Unix nanoseconds.
        pub create_time: i64,
        /// The check-and-set token (`?cas=`).
        pub modify_index: u64,
        /// Unix nanoseconds.
        pub modify_time: i64,
    }
}

/// A full variable: read, write and lock-acquire answers, write and lock bodies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    #[serde(flatten)]
    pub meta: VariableMetadata,
    #[serde(
        rename = "Items",
        default,
        deserialize_with = "crate::client::wire::nd",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub items: Items,
}

/// A variable's lock. `ttl` and `lock_delay` zero mean "the server's default" (15 s each)
/// in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableLock {
    /// The holder's proof of ownership (a UUID the server generates unless the acquire
    /// carries one).
    #[serde(rename = "ID", default, deserialize_with = "crate::client::wire::nd")]
    pub id: String,
    #[serde(rename = "TTL", default, with = "go_duration")]
    pub ttl: Duration,
    #[serde(rename = "LockDelay", default, with = "go_duration")]
    pub lock_delay: Duration,
}

// === impl Variable ===

impl Variable {
    /// The lock's ID, or `""` when the answer carries no lock.
    pub fn lock_id(&self) -> &str {
        self.meta.lock.as_ref().map_or("", |l| l.id.as_str())
    }
}

/// Go's `time.Duration.String()`: `"1h2m3.5s"`, `"1m0s"`, `"1.5ms"`, `"0s"`.
pub fn go_duration_string(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    if ns < 1_000_000_000 {
        // Below a second: the largest unit under one second, with a fraction.
        let (unit, scale) = match ns {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        push_fraction(&mut out, ns, scale);
        out.push_str(unit);
        return out;
    }
    let secs = ns / 1_000_000_000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    push_fraction(
        &mut out,
        s * 1_000_000_000 + ns % 1_000_000_000,
        1_000_000_000,
    );
    out.push('s');
    out
}

/// `v / scale` with the fraction's trailing zeros (and a bare point) left out.
fn push_fraction(out: &mut String, v: u128, scale: u128) {
    let _ = write!(out, "{}", v / scale);
    let frac = v % scale;
    if frac > 0 {
        let width = scale.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// A Go duration string as the server reads it: `""` is zero; `"0"` is zero; any other value
/// needs units (`crate::model::duration::parse` reads them). `None` when it is not one.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let t = s.trim();
    if t.is_empty() || t == "0" {
        return Some(Duration::ZERO);
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    crate::model::duration::parse(t)
}

/// Serde for a [`Duration`] as the Nomad variables API writes and reads it.
mod go_duration {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.is_zero() {
            s.serialize_str("")
        } else {
            s.serialize_str(&go_duration_string(*d))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(GoDuration)
    }

    struct GoDuration;

    impl<'de> Visitor<'de> for GoDuration {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Go duration string (\"15s\") or a number of nanoseconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            if v.trim_start().starts_with('-') {
                return Err(E::custom(format!("negative duration {v:?}")));
            }
            parse_go_duration(v)
                .ok_or_else(|| E::custom(format!("invalid duration {v:?} (expected e.g. \"15s\")")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_nanos(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_nanos)
                .map_err(|_| E::custom(format!("negative duration {v} ns")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            // Go decodes a JSON number into an int64: only whole numbers.
            if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 {
                Ok(Duration::from_nanos(v as u64))
            } else {
                Err(E::custom(format!(
                    "{v} is not a whole number of nanoseconds"
                )))
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Duration, E> {
            Ok(Duration::ZERO)
        }

        fn visit_none<E: de::Error>(self) -> Result<Duration, E> {
            Ok(Duration::ZERO)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_print_as_go_does() {
        // Outputs of Go's time.Duration.String() for the same values.
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(999), "999µs"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(86_400), "24h0m0s"),
            (Duration::new(4530, 918_273_645), "1h15m30.918273645s"),
            (Duration::new(60, 1), "1m0.000000001s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration_string(d), want, "{d:?}");
            // And every printed form reads back (Go's own round trip).
            assert_eq!(parse_go_duration(want), Some(d), "{want}");
        }
    }

    #[test]
    fn durations_read_as_the_server_reads_them() {
        assert_eq!(parse_go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration(""), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["15", "15x", "s", "1m30"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lock_durations_are_strings_out_and_strings_or_nanoseconds_in() {
        let l: VariableLock = serde_json::from_value(
            json!({"ID": "x", "TTL": "15s", "LockDelay": 60_000_000_000u64}),
        )
        .unwrap();
        assert_eq!(l.ttl, Duration::from_secs(15));
        assert_eq!(l.lock_delay, Duration::from_secs(60));
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"ID": "x", "TTL": "15s", "LockDelay": "1m0s"})
        );
        let zero = VariableLock::default();
        assert_eq!(
            serde_json::to_value(&zero).unwrap(),
            json!({"ID": "", "TTL": "", "LockDelay": ""})
        );
        let empty: VariableLock =
            serde_json::from_value(json!({"TTL": null, "LockDelay": ""})).unwrap();
        assert_eq!(empty, zero);
        for bad in [
            json!("-1s"),
            json!(-5),
            json!(1.5),
            json!("15"),
            json!(true),
        ] {
            assert!(
                serde_json::from_value::<VariableLock>(json!({ "TTL": bad.clone() })).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn variables_leave_out_empty_items_and_absent_locks() {
        let v = Variable {
            meta: VariableMetadata {
                namespace: "prod".into(),
                path: "a/b".into(),
                ..Default::default()
            },
            items: Items::new(),
        };
        let out = serde_json::to_value(&v).unwrap();
        assert!(
            out.get("Items").is_none() && out.get("Lock").is_none(),
            "{out}"
        );
        assert_eq!(out["Namespace"], "prod");
        // `null` Items and Lock (the docs' conflict sample) read as empty.
        let back: Variable =
            serde_json::from_value(json!({"Path": "a/b", "Items": null, "Lock": null})).unwrap();
        assert!(back.items.is_empty() && back.meta.lock.is_none());
        assert_eq!(back.lock_id(), "");
    }
}
