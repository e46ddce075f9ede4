//! Wire types of the Nomad and Consul HTTP APIs, with the servers' exact field names.
//!
//! Parsing is lenient by rule (reference section 1): every field is optional, a missing
//! field or an explicit `null` reads as the zero value ([`nd`]), unknown fields are ignored,
//! and times may be `null` or `"0001-01-01T00:00:00Z"` (kept as strings). Serialisation
//! writes what the servers accept. `tests/it/nomad_conformance.rs` parses every fixture of
//! `../shared/fixtures` with these types.

/// Declares wire structs under the lenient rule, stated once instead of on every field: each
/// struct derives `Debug, Clone, Default, PartialEq, Serialize, Deserialize` with PascalCase
/// names, and every field reads as its zero value when absent or `null` (`default` and
/// [`nd`]). Fields keep their own `rename` and `skip_serializing_if`.
macro_rules! lenient {
    ($(
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fattr:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[$attr])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        $vis struct $name {
            $(
                $(#[$fattr])*
                #[serde(default, deserialize_with = "crate::client::wire::nd")]
                $fvis $field: $ty,
            )*
        }
    )*};
}

pub mod consul;
pub mod nomad;
pub mod variables;

use serde::{Deserialize, Deserializer};

/// `null` or absent -> `T::default()`.
pub(crate) fn nd<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
