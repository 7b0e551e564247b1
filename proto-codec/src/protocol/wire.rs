//! Serde helpers shared by the op and event wire structs.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

/// A string borrowed from the input when it has no escapes.
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

/// Deserializes an optional string, borrowing it from the input when it has no escapes.
///
/// Serde's own `Option<Cow<str>>` always allocates; this keeps room names on the publish path
/// allocation-free.
pub(crate) fn opt_cow<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

/// Deserializes a present field as raw JSON, `null` included (serde's `Option` would turn `null`
/// into `None`); a missing field stays `None` through `#[serde(default)]`.
pub(crate) fn present_raw<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a serde_json::value::RawValue>, D::Error> {
    <&'a serde_json::value::RawValue>::deserialize(d).map(Some)
}
