//! OpenFaaS resource strings (`limits`, `requests`) to Nomad task `Resources`.
//!
//! OpenFaaS passes Kubernetes quantity strings (`128Mi`, `1G`, `512M`, `0.5`, `100m`, `2`);
//! Nomad wants integers: `CPU` in MHz and `MemoryMB` / `MemoryMaxMB` in MiB (Nomad's "MB" is
//! 2^20 bytes). The rule, stated once:
//!
//! - **Memory**: a quantity is a decimal number (`128`, `0.5`, `1.5e3`) with an optional suffix:
//!   binary `Ki Mi Gi Ti Pi Ei` (2^10 steps), decimal `k`/`K M G T P E` (10^3 steps), or `m`
//!   (10^-3, as Kubernetes allows). The byte count is rounded **up** to whole MiB and raised
//!   to Nomad's minimum of [`MIN_MEMORY_MB`]: `128Mi` -> 128, `128M` -> 123, `1G` -> 954,
//!   `1Gi` -> 1024, `5Mi` -> 10.
//! - **CPU**: a number of cores (`2`, `0.5`) or millicores (`100m`); **1 core = 1000 MHz**, so
//!   MHz = millicores, rounded up, at least [`MIN_CPU_MHZ`]: `100m` -> 100, `0.5` -> 500,
//!   `2` -> 2000.
//! - **Which value goes where**: `CPU` and `MemoryMB` come from `requests`, falling back to
//!   `limits`, falling back to [`DEFAULT_CPU_MHZ`] / [`DEFAULT_MEMORY_MB`]. `MemoryMaxMB` is
//!   `limits.memory` when it is larger than the `MemoryMB` chosen (Nomad enforces it only
//!   when memory oversubscription is enabled in the scheduler configuration). A CPU limit has
//!   no Nomad equivalent beyond the share, so it is used only when no request is given.
//! - An empty string counts as "not given". Anything else that does not parse, or a value of
//!   zero, negative or beyond `u32` MiB/MHz, is a [`ResourceError`] naming the field
//!   (`limits.memory`, `requests.cpu`, ...) and the value.
//!
//! The original strings are never changed: the deployment stored in job meta echoes them.
//! Pure functions only.

use thiserror::Error;

use crate::model::types::FunctionDeployment;

/// Nomad's smallest accepted `MemoryMB`.
pub(crate) const MIN_MEMORY_MB: u64 = 10;
/// Nomad's smallest accepted `CPU`.
pub(crate) const MIN_CPU_MHZ: u64 = 1;
/// `CPU` when the function asks for nothing (Nomad's own default).
pub(crate) const DEFAULT_CPU_MHZ: u64 = 100;
/// `MemoryMB` when the function asks for nothing (faas-nomad's default; Nomad's is 300).
pub(crate) const DEFAULT_MEMORY_MB: u64 = 128;
/// MHz per core.
pub(crate) const MHZ_PER_CORE: u64 = 1000;

const MIB: f64 = 1024.0 * 1024.0;
/// Largest value accepted for MHz or MiB (Nomad stores them as Go `int`; stay well inside).
const MAX_UNITS: u64 = u32::MAX as u64;

/// A resource string that does not follow the rule in the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field} {value:?} is invalid: {rule}")]
pub struct ResourceError {
    /// `limits.memory`, `requests.cpu`, ...
    pub field: &'static str,
    pub value: String,
    pub rule: &'static str,
}

/// The integers Nomad gets for one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NomadResources {
    pub(crate) cpu_mhz: u64,
    pub(crate) memory_mb: u64,
    /// Only when a memory limit above `memory_mb` was given.
    pub(crate) memory_max_mb: Option<u64>,
}

const MEMORY_RULE: &str = "expected a positive quantity such as 128Mi, 512M, 1G or 1Gi \
     (suffixes Ki Mi Gi Ti Pi Ei k M G T P E m)";
const CPU_RULE: &str = "expected a positive number of cores such as 2 or 0.5, or millicores \
     such as 100m";

// === impl NomadResources ===

impl NomadResources {
    /// Applies the rule of the module docs to a deployment's `requests` and `limits`.
    pub(crate) fn from_deployment(d: &FunctionDeployment) -> Result<Self, ResourceError> {
        let given = |s: Option<&String>| s.filter(|s| !s.trim().is_empty()).cloned();
        let req_mem = given(d.requests.as_ref().map(|r| &r.memory));
        let req_cpu = given(d.requests.as_ref().map(|r| &r.cpu));
        let lim_mem = given(d.limits.as_ref().map(|r| &r.memory));
        let lim_cpu = given(d.limits.as_ref().map(|r| &r.cpu));

        let req_mem = req_mem
            .map(|v| memory_mb("requests.memory", &v))
            .transpose()?;
        let lim_mem = lim_mem
            .map(|v| memory_mb("limits.memory", &v))
            .transpose()?;
        let req_cpu = req_cpu.map(|v| cpu_mhz("requests.cpu", &v)).transpose()?;
        let lim_cpu = lim_cpu.map(|v| cpu_mhz("limits.cpu", &v)).transpose()?;

        let memory_mb = req_mem.or(lim_mem).unwrap_or(DEFAULT_MEMORY_MB);
        let memory_max_mb = lim_mem.filter(|&max| max > memory_mb);
        let cpu_mhz = req_cpu.or(lim_cpu).unwrap_or(DEFAULT_CPU_MHZ);
        Ok(Self {
            cpu_mhz,
            memory_mb,
            memory_max_mb,
        })
    }

    /// The task's `Resources` object.
    pub(crate) fn to_json(self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("CPU".into(), self.cpu_mhz.into());
        m.insert("MemoryMB".into(), self.memory_mb.into());
        if let Some(max) = self.memory_max_mb {
            m.insert("MemoryMaxMB".into(), max.into());
        }
        serde_json::Value::Object(m)
    }
}

/// A memory quantity in MiB, rounded up, at least [`MIN_MEMORY_MB`].
pub(crate) fn memory_mb(field: &'static str, value: &str) -> Result<u64, ResourceError> {
    let err = || ResourceError {
        field,
        value: value.to_string(),
        rule: MEMORY_RULE,
    };
    let (number, suffix) = split_quantity(value.trim()).ok_or_else(err)?;
    let scale: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => MIB,
        "Gi" => MIB * 1024.0,
        "Ti" => MIB * MIB,
        "Pi" => MIB * MIB * 1024.0,
        "Ei" => MIB * MIB * MIB,
        _ => return Err(err()),
    };
    let bytes = number * scale;
    to_units(bytes / MIB, MIN_MEMORY_MB).ok_or_else(err)
}

/// A CPU quantity in MHz (1 core = 1000 MHz), rounded up, at least [`MIN_CPU_MHZ`].
pub(crate) fn cpu_mhz(field: &'static str, value: &str) -> Result<u64, ResourceError> {
    let err = || ResourceError {
        field,
        value: value.to_string(),
        rule: CPU_RULE,
    };
    let (number, suffix) = split_quantity(value.trim()).ok_or_else(err)?;
    let cores = match suffix {
        "" => number,
        "m" => number / 1000.0,
        _ => return Err(err()),
    };
    to_units(cores * MHZ_PER_CORE as f64, MIN_CPU_MHZ).ok_or_else(err)
}

/// Splits `1.5Gi` into (1.5, "Gi"). The number part is digits with at most one dot and an
/// optional exponent (`1e3`); no sign is accepted.
fn split_quantity(s: &str) -> Option<(f64, &str)> {
    let bytes = s.as_bytes();
    let mut end = 0;
    let mut seen_digit = false;
    let mut seen_dot = false;
    while end < bytes.len() {
        match bytes[end] {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        end += 1;
    }
    if !seen_digit {
        return None;
    }
    // An exponent: `e`/`E` followed by an optional sign and digits. A bare `E` is the exa
    // suffix, so only take it when digits follow.
    if end < bytes.len() && (bytes[end] == b'e' || bytes[end] == b'E') {
        let mut j = end + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        let digits_start = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j > digits_start {
            end = j;
        }
    }
    let number: f64 = s[..end].parse().ok()?;
    Some((number, &s[end..]))
}

/// Rounds a positive finite amount up to whole units, at least `min`, at most `MAX_UNITS`.
fn to_units(amount: f64, min: u64) -> Option<u64> {
    if !amount.is_finite() || amount <= 0.0 {
        return None;
    }
    // Kill float noise such as 128.00000000000003 before rounding up.
    let rounded = (amount * 1e9).round() / 1e9;
    let units = rounded.ceil();
    if units > MAX_UNITS as f64 {
        return None;
    }
    Some((units as u64).max(min))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::FunctionResources;

    #[test]
    fn memory_follows_the_documented_rule() {
        let m = |v| memory_mb("limits.memory", v).unwrap();
        assert_eq!(m("128Mi"), 128);
        assert_eq!(m("128M"), 123);
        assert_eq!(m("512M"), 489);
        assert_eq!(m("1G"), 954);
        assert_eq!(m("1Gi"), 1024);
        assert_eq!(m("1.5Gi"), 1536);
        assert_eq!(m("5Mi"), MIN_MEMORY_MB);
        assert_eq!(m("20971520"), 20);
        assert_eq!(m("11534337"), 12);
        assert_eq!(m("131072Ki"), 128);
        assert_eq!(m("128e6"), 123);
        assert_eq!(m(" 64Mi "), 64);
        assert_eq!(m("1T"), 953_675);
        assert_eq!(m("1Ti"), 1_048_576);
        // 1E is about 9.5e11 MiB, beyond what Nomad can hold.
        assert!(memory_mb("limits.memory", "1E").is_err());
    }

    #[test]
    fn cpu_follows_the_documented_rule() {
        let c = |v| cpu_mhz("requests.cpu", v).unwrap();
        assert_eq!(c("100m"), 100);
        assert_eq!(c("0.5"), 500);
        assert_eq!(c("2"), 2000);
        assert_eq!(c("0.01"), 10);
        assert_eq!(c("0.0001"), MIN_CPU_MHZ);
        assert_eq!(c("1500m"), 1500);
        assert_eq!(c("0.1"), 100);
    }

    #[test]
    fn invalid_strings_name_field_and_value() {
        for bad in [
            "", "abc", "-1Mi", "0", "0Mi", "12Mx", "1..2", "Mi", "1e", "NaN", "inf",
        ] {
            let e = memory_mb("limits.memory", bad).unwrap_err();
            assert_eq!(e.field, "limits.memory");
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("limits.memory"), "{e}");
        }
        for bad in ["", "1Gi", "x", "-2", "0", "100u"] {
            let e = cpu_mhz("requests.cpu", bad).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("requests.cpu {bad:?}")),
                "{e}"
            );
        }
        assert!(memory_mb("limits.memory", "99999999999Ei").is_err());
    }

    fn res(memory: &str, cpu: &str) -> Option<FunctionResources> {
        Some(FunctionResources {
            memory: memory.into(),
            cpu: cpu.into(),
        })
    }

    #[test]
    fn requests_then_limits_then_defaults() {
        let mut d = FunctionDeployment::default();
        let r = NomadResources::from_deployment(&d).unwrap();
        assert_eq!(
            r,
            NomadResources {
                cpu_mhz: DEFAULT_CPU_MHZ,
                memory_mb: DEFAULT_MEMORY_MB,
                memory_max_mb: None
            }
        );

        d.limits = res("256Mi", "1");
        let r = NomadResources::from_deployment(&d).unwrap();
        assert_eq!((r.cpu_mhz, r.memory_mb, r.memory_max_mb), (1000, 256, None));

        d.requests = res("64Mi", "100m");
        let r = NomadResources::from_deployment(&d).unwrap();
        assert_eq!(
            (r.cpu_mhz, r.memory_mb, r.memory_max_mb),
            (100, 64, Some(256))
        );
        assert_eq!(
            r.to_json(),
            serde_json::json!({"CPU": 100, "MemoryMB": 64, "MemoryMaxMB": 256})
        );

        // A limit below the request is not a max.
        d.limits = res("32Mi", "");
        let r = NomadResources::from_deployment(&d).unwrap();
        assert_eq!((r.memory_mb, r.memory_max_mb), (64, None));

        d.requests = res("lots", "");
        let e = NomadResources::from_deployment(&d).unwrap_err();
        assert_eq!((e.field, e.value.as_str()), ("requests.memory", "lots"));
    }

    proptest::proptest! {
        #![proptest_config(crate::control::nomad::fixed_seed_proptest())]
        #[test]
        fn parsers_never_panic(s in "\\PC{0,12}") {
            let _ = memory_mb("limits.memory", &s);
            let _ = cpu_mhz("limits.cpu", &s);
        }

        #[test]
        fn mebibytes_round_trip(n in 10u64..1_000_000) {
            proptest::prop_assert_eq!(memory_mb("limits.memory", &format!("{n}Mi")).unwrap(), n);
            proptest::prop_assert_eq!(cpu_mhz("limits.cpu", &format!("{n}m")).unwrap(), n);
        }
    }
}
