//! Values a database would reject, made storable: NUL characters (PostgreSQL), counts above the
//! signed 64-bit range.

/// Replaces NUL characters (which PostgreSQL rejects in `text` and `jsonb`) by U+FFFD.
#[cfg(feature = "postgres")]
pub(crate) fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A record's attributes with [`json_without_nul`] applied, borrowed when they hold no NUL.
#[cfg(feature = "postgres")]
pub(crate) fn attributes_without_nul(
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> std::borrow::Cow<'_, serde_json::Map<String, serde_json::Value>> {
    fn has_nul(value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || has_nul(value)),
            _ => false,
        }
    }
    if attributes
        .iter()
        .any(|(key, value)| key.contains('\0') || has_nul(value))
    {
        std::borrow::Cow::Owned(map_without_nul(attributes))
    } else {
        std::borrow::Cow::Borrowed(attributes)
    }
}

/// [`without_nul`] applied to every string (and key) inside a JSON value.
#[cfg(feature = "postgres")]
pub(crate) fn json_without_nul(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(without_nul(text).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(json_without_nul).collect()),
        Value::Object(map) => Value::Object(map_without_nul(map)),
        other => other.clone(),
    }
}

/// [`json_without_nul`] of an object's keys and values.
#[cfg(feature = "postgres")]
fn map_without_nul(
    map: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    map.iter()
        .map(|(key, value)| (without_nul(key).into_owned(), json_without_nul(value)))
        .collect()
}

/// `attributes` as JSON text, without copying the map first.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) fn attributes_json(attributes: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(attributes).unwrap_or_else(|_| String::from("{}"))
}

/// A count as a signed 64-bit integer (PostgreSQL `bigint`, SQLite `INTEGER`), held at
/// `i64::MAX`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn clamp(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_everywhere() {
        assert_eq!(without_nul("a\0b"), "a\u{FFFD}b");
        let clean = serde_json::json!({"k": ["x", {"y": "z"}], "n": 1});
        let clean = clean.as_object().unwrap();
        assert!(matches!(
            attributes_without_nul(clean),
            std::borrow::Cow::Borrowed(_)
        ));
        for dirty in [
            serde_json::json!({"k\0": 1}),
            serde_json::json!({"k": ["x", {"y": "\0"}]}),
        ] {
            let sanitized = attributes_without_nul(dirty.as_object().unwrap()).into_owned();
            assert_eq!(
                serde_json::Value::Object(sanitized),
                json_without_nul(&dirty)
            );
            assert!(!serde_json::to_string(&json_without_nul(&dirty))
                .unwrap()
                .contains("\\u0000"));
        }
        let json = serde_json::json!({"k\0": ["x\0", {"y": "\0"}], "n": 1});
        assert_eq!(
            json_without_nul(&json),
            serde_json::json!({"k\u{FFFD}": ["x\u{FFFD}", {"y": "\u{FFFD}"}], "n": 1})
        );
    }
}
