//! Dimensions: tenant, user, session and extra fields, converted from whatever the handler has.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::call::intern::{intern, intern_model};
use uuid::Uuid;

/// The namespace in which non-UUID user and session ids are mapped to UUIDv5.
pub const DEFAULT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x8f0e_2c4b_6a1d_4e57_9b3c_d1f2_a0e4_c7b5);

/// A value usable as `tenant = expr`: anything string-like, a UUID, an integer id, or an
/// `Option` of those. An empty string means "no tenant".
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as `tenant = ...`",
    label = "expected a string, a UUID, an integer id, or an `Option` of those",
    note = "implement `usage_runtime::dimensions::TenantValue` for your own tenant type"
)]
pub trait TenantValue {
    /// The tenant id, or `None`.
    fn tenant_value(&self) -> Option<String>;

    /// The tenant id when the value already is text, so it need not be copied per call (an
    /// empty string means no tenant). The default says it is not. When both are given they must
    /// agree: this one is used first.
    fn tenant_str(&self) -> Option<&str> {
        None
    }
}

/// A user or session id given to `user = expr` / `session = expr`.
///
/// A string that parses as a UUID is that UUID; any other non-empty string (and any integer) is
/// mapped deterministically to a UUIDv5 in the tracker's namespace
/// ([`TrackerBuilder::id_namespace`](crate::TrackerBuilder::id_namespace)), so ids such as
/// `"user_42"` never make a database reject the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdInput {
    /// Already a UUID.
    Uuid(Uuid),
    /// Any other id, mapped to a UUIDv5 when the record is made.
    Name(String),
}

impl IdInput {
    /// The UUID this id stands for in `namespace`.
    pub fn resolve(&self, namespace: &Uuid) -> Uuid {
        match self {
            IdInput::Uuid(id) => *id,
            IdInput::Name(name) => Uuid::new_v5(namespace, name.as_bytes()),
        }
    }

    fn from_text(text: &str) -> Option<IdInput> {
        if text.is_empty() {
            None
        } else if let Ok(id) = Uuid::try_parse(text) {
            Some(IdInput::Uuid(id))
        } else {
            Some(IdInput::Name(text.to_owned()))
        }
    }
}

/// A value usable as `user = expr` or `session = expr`: a [`Uuid`], anything string-like, an
/// integer id, or an `Option` of those. Implement it for your own id types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a user or session id",
    label = "expected a `Uuid`, a string, an integer id, or an `Option` of those",
    note = "implement `usage_runtime::dimensions::IdValue` for your own id type"
)]
pub trait IdValue {
    /// The id, or `None`.
    fn id_value(&self) -> Option<IdInput>;
}

macro_rules! text_impls {
    ($($ty:ty),*) => {$(
        impl TenantValue for $ty {
            fn tenant_value(&self) -> Option<String> {
                let text: &str = self.as_ref();
                (!text.is_empty()).then(|| text.to_owned())
            }

            fn tenant_str(&self) -> Option<&str> {
                Some(self.as_ref())
            }
        }

        impl IdValue for $ty {
            fn id_value(&self) -> Option<IdInput> {
                IdInput::from_text(self.as_ref())
            }
        }
    )*};
}

text_impls!(str, String, Box<str>, Rc<str>, Arc<str>, Cow<'_, str>);

macro_rules! integer_impls {
    ($($ty:ty),*) => {$(
        impl TenantValue for $ty {
            fn tenant_value(&self) -> Option<String> {
                Some(self.to_string())
            }
        }

        impl IdValue for $ty {
            fn id_value(&self) -> Option<IdInput> {
                Some(IdInput::Name(self.to_string()))
            }
        }
    )*};
}

integer_impls!(i32, i64, u32, u64, i128, u128, usize);

impl TenantValue for Uuid {
    fn tenant_value(&self) -> Option<String> {
        Some(self.hyphenated().to_string())
    }
}

impl IdValue for Uuid {
    fn id_value(&self) -> Option<IdInput> {
        Some(IdInput::Uuid(*self))
    }
}

impl IdValue for IdInput {
    fn id_value(&self) -> Option<IdInput> {
        Some(self.clone())
    }
}

impl<T: TenantValue + ?Sized> TenantValue for &T {
    fn tenant_value(&self) -> Option<String> {
        (**self).tenant_value()
    }

    fn tenant_str(&self) -> Option<&str> {
        (**self).tenant_str()
    }
}

impl<T: IdValue + ?Sized> IdValue for &T {
    fn id_value(&self) -> Option<IdInput> {
        (**self).id_value()
    }
}

impl<T: TenantValue> TenantValue for Option<T> {
    fn tenant_value(&self) -> Option<String> {
        self.as_ref().and_then(T::tenant_value)
    }

    fn tenant_str(&self) -> Option<&str> {
        match self {
            Some(value) => value.tenant_str(),
            None => Some(""),
        }
    }
}

impl<T: IdValue> IdValue for Option<T> {
    fn id_value(&self) -> Option<IdInput> {
        self.as_ref().and_then(T::id_value)
    }
}

/// The dimensions declared on one call, evaluated at entry.
#[doc(hidden)]
#[derive(Debug, Default, Clone)]
pub struct Dimensions {
    pub tenant: Option<Cow<'static, str>>,
    pub user: Option<IdInput>,
    pub session: Option<IdInput>,
    pub model: Option<Cow<'static, str>>,
    pub fields: Vec<(&'static str, serde_json::Value)>,
}

impl Dimensions {
    /// Nothing declared: the generated code names only the dimensions an attribute declares.
    pub const NONE: Dimensions = Dimensions {
        tenant: None,
        user: None,
        session: None,
        model: None,
        fields: Vec::new(),
    };

    /// Whether nothing is declared.
    pub(crate) fn is_empty(&self) -> bool {
        self.tenant.is_none()
            && self.user.is_none()
            && self.session.is_none()
            && self.model.is_none()
            && self.fields.is_empty()
    }
}

#[doc(hidden)]
pub fn model<T: crate::call::tokens::ModelName + ?Sized>(value: &T) -> Option<Cow<'static, str>> {
    value.model_name().map(intern_model)
}

#[doc(hidden)]
pub fn tenant<T: TenantValue + ?Sized>(value: &T) -> Option<Cow<'static, str>> {
    match value.tenant_str() {
        Some(text) => (!text.is_empty()).then(|| intern(text)),
        None => value.tenant_value().map(|text| intern(&text)),
    }
}

#[doc(hidden)]
pub fn id<T: IdValue + ?Sized>(value: &T) -> Option<IdInput> {
    value.id_value()
}

/// A field's value as JSON. A value whose `Serialize` impl fails is kept as the error text, so the
/// call is still recorded and the failure is visible in the row.
#[doc(hidden)]
pub fn field<T: Serialize + ?Sized>(value: &T) -> serde_json::Value {
    serde_json::to_value(value)
        .unwrap_or_else(|error| serde_json::Value::String(format!("<not serializable: {error}>")))
}

#[doc(hidden)]
pub fn fields<const N: usize>(
    fields: [(&'static str, serde_json::Value); N],
) -> Vec<(&'static str, serde_json::Value)> {
    let mut fields = Vec::from(fields);
    cap_fields(&mut fields, ATTRIBUTES_LIMIT.load(Ordering::Relaxed));
    fields
}

/// Bytes of JSON a record's `fields(...)` attributes may take by default.
pub const DEFAULT_ATTRIBUTES_LIMIT: usize = 16 * 1024;

/// The attribute a record gets when its attributes passed the limit: the names of the fields
/// cut or left out.
pub const CUT_ATTRIBUTE: &str = "attributes_cut";

/// The installed tracker's limit (set at install).
pub(crate) static ATTRIBUTES_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_ATTRIBUTES_LIMIT);

/// Holds `fields` to about `limit` bytes of JSON, at the call, so neither the queue nor the spool
/// keeps more: a string that passes the limit is cut on a character boundary and ends with `…`,
/// any other value that passes it is left out, and the record gets [`CUT_ATTRIBUTE`], the names
/// of the fields cut or left out.
fn cap_fields(fields: &mut Vec<(&'static str, serde_json::Value)>, limit: usize) {
    use serde_json::Value;
    let mut used = 2; // the braces
    let mut cut = Vec::new();
    fields.retain_mut(|(name, value)| {
        let head = name.len() + 4; // quotes, colon, comma
        let size = json_len(value);
        if used + head + size <= limit {
            used += head + size;
            return true;
        }
        cut.push(Value::String((*name).to_owned()));
        let room = limit.saturating_sub(used + head);
        match value {
            Value::String(text) if room > 8 => {
                let mut end = room - 5; // quotes and the ellipsis
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                *value = Value::String(format!("{}…", &text[..end]));
                used += head + json_len(value);
                true
            }
            _ => false,
        }
    });
    if !cut.is_empty() {
        fields.push((CUT_ATTRIBUTE, Value::Array(cut)));
    }
}

/// The bytes of a JSON number, without formatting it (no allocation per field per call, and no
/// float formatter in every binary): an integer's digits exactly, a float at its longest (24, as
/// in `-2.2250738585072014e-308`), so a float is never kept past the limit.
fn number_len(number: &serde_json::Number) -> usize {
    fn digits(n: u64) -> usize {
        n.checked_ilog10().map_or(1, |log| log as usize + 1)
    }
    if let Some(n) = number.as_u64() {
        digits(n)
    } else if let Some(n) = number.as_i64() {
        1 + digits(n.unsigned_abs())
    } else {
        24
    }
}

/// About how many bytes `value` takes as JSON (escapes not counted), without writing it.
fn json_len(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(number) => number_len(number),
        Value::String(text) => text.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|item| json_len(item) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(key, value)| key.len() + 4 + json_len(value))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_held_to_the_attributes_limit_and_flagged() {
        let small = |fields: &mut Vec<(&'static str, serde_json::Value)>| {
            cap_fields(fields, 1024);
        };
        // Within the limit: untouched, no flag.
        let mut fields = vec![("plan", field("pro")), ("n", field(&7))];
        small(&mut fields);
        assert_eq!(fields, vec![("plan", field("pro")), ("n", field(&7))]);
        // A string past it is cut with an ellipsis; what follows is noted; the record flagged.
        let mut fields = vec![
            ("prompt", field(&"é".repeat(5000))),
            ("messages", field(&vec!["x".repeat(100); 50])),
            ("n", field(&7)),
        ];
        small(&mut fields);
        let json = serde_json::to_string(&serde_json::Map::from_iter(
            fields.iter().map(|(k, v)| (k.to_string(), v.clone())),
        ))
        .unwrap();
        assert!(json.len() <= 1024 + 64, "{} bytes", json.len());
        assert!(fields[0].1.as_str().unwrap().ends_with('…'));
        assert!(
            fields[0].1.as_str().unwrap().len() > 900,
            "the room is used"
        );
        assert_eq!(
            fields[1..],
            [(
                CUT_ATTRIBUTE,
                serde_json::json!(["prompt", "messages", "n"])
            )]
        );
    }

    #[test]
    fn numbers_are_measured_without_formatting() {
        for n in [0u64, 9, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(json_len(&field(&n)), n.to_string().len(), "{n}");
        }
        for n in [-1i64, -10, -12_345, i64::MIN] {
            assert_eq!(json_len(&field(&n)), n.to_string().len(), "{n}");
        }
        for x in [0.5f64, -2.2250738585072014e-308, f64::MAX, 1.0 / 3.0] {
            assert!(json_len(&field(&x)) >= field(&x).to_string().len(), "{x}");
        }
    }

    #[test]
    fn ids_parse_or_map_deterministically() {
        let namespace = Uuid::from_u128(7);
        let uuid = Uuid::from_u128(0x1234);
        assert_eq!(id(&uuid.to_string()), Some(IdInput::Uuid(uuid)));
        let mapped = id("user_42").unwrap().resolve(&namespace);
        assert_eq!(mapped, Uuid::new_v5(&namespace, b"user_42"));
        assert_eq!(
            mapped,
            id(&String::from("user_42")).unwrap().resolve(&namespace)
        );
        assert_ne!(mapped, id("user_43").unwrap().resolve(&namespace));
        assert_eq!(id(""), None);
        assert_eq!(id(&None::<String>), None);
        assert_eq!(id(&Some(42u64)), Some(IdInput::Name("42".into())));
    }

    #[test]
    fn tenants_are_text() {
        assert_eq!(tenant("acme").as_deref(), Some("acme"));
        assert_eq!(tenant(&Some(String::from("acme"))).as_deref(), Some("acme"));
        assert_eq!(tenant(""), None);
        assert_eq!(tenant(&None::<&str>), None);
        assert_eq!(tenant(&Some("")), None);
        assert_eq!(tenant(&17i64).as_deref(), Some("17"));
        assert_eq!(
            tenant(&Uuid::from_u128(1)).as_deref(),
            Some("00000000-0000-0000-0000-000000000001")
        );
    }

    #[test]
    fn tenants_are_copied_once_per_process() {
        let (Some(Cow::Borrowed(a)), Some(Cow::Borrowed(b))) = (
            tenant("interned-tenant"),
            tenant(&String::from("interned-tenant")),
        ) else {
            panic!("short tenant ids are interned");
        };
        assert!(std::ptr::eq(a, b), "one copy");
        let other_thread = std::thread::spawn(|| match tenant("interned-tenant") {
            Some(Cow::Borrowed(text)) => text as *const str as *const u8 as usize,
            _ => 0,
        })
        .join()
        .unwrap();
        assert_eq!(
            other_thread, a as *const str as *const u8 as usize,
            "shared by threads"
        );
        let long = "x".repeat(crate::call::intern::MAX_INTERNED_LEN + 1);
        assert!(matches!(tenant(long.as_str()), Some(Cow::Owned(text)) if text == long));
    }
}
