//! A body that holds only statuses, read without building a `serde_json::Value`.
//!
//! Six of every seven webhooks are Meta's `sent`, `delivered` and `read` for our own
//! replies: one `messages` change whose value holds `messaging_product`, `metadata`
//! and `statuses[]`, nothing else. [`StatusOnly::parse`] reads exactly that shape,
//! borrowing from the body: the envelope's levels are typed, each status object is
//! kept as its members' raw JSON text, and only the members the rows need are read
//! (through the same lenient rules as [`Status`](super::Status)). Anything else
//! (another field, a message, `errors`, an unknown key at any envelope level, a key
//! written with escapes, a repeated key, a status that is not an object) returns
//! `None`, and the caller reads the body the general way ([`Envelope`](super::Envelope)):
//! this path is only ever a faster way to the same rows, never a different reading.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{lenient, ApiError, StatusKind};

/// A webhook whose every change is a `messages` change holding statuses only.
#[derive(Debug)]
pub struct StatusOnly<'a> {
    /// `whatsapp_business_account` for WhatsApp.
    pub object: Option<String>,
    /// Every status of every change, in order.
    pub statuses: Vec<RawStatus<'a>>,
}

/// One status object, as its members' JSON text.
#[derive(Debug)]
pub struct RawStatus<'a> {
    members: Vec<(&'a str, &'a RawValue)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(default, deserialize_with = "lenient::string")]
    object: Option<String>,
    #[serde(borrow)]
    entry: Vec<EntryIn<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn<'a> {
    // Read, not kept: the business account is not one of a status's columns.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    changes: Vec<ChangeIn<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeIn<'a> {
    field: &'a str,
    #[serde(borrow)]
    value: ValueIn<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueIn<'a> {
    #[serde(default)]
    #[allow(dead_code)]
    messaging_product: Option<&'a RawValue>,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: Option<MetadataIn<'a>>,
    #[serde(borrow)]
    statuses: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct MetadataIn<'a> {
    #[serde(default, borrow)]
    display_phone_number: Option<&'a RawValue>,
    #[serde(default, borrow)]
    phone_number_id: Option<&'a RawValue>,
}

impl<'a> StatusOnly<'a> {
    /// Reads a body holding statuses only (at least one); `None` for any other body.
    pub fn parse(body: &'a str) -> Option<StatusOnly<'a>> {
        // Raw members are not read as values: first make sure the body is one the
        // general path reads at all (numbers in range, no lone surrogate, not too
        // deep), so nothing it would keep as unreadable is stored from here.
        serde_json::from_str::<Valid>(body).ok()?;
        let parsed: Body<'a> = serde_json::from_str(body).ok()?;
        let mut statuses = Vec::new();
        for entry in parsed.entry {
            for change in entry.changes {
                if change.field != "messages" {
                    return None;
                }
                for status in change.value.statuses {
                    statuses.push(RawStatus::parse(status)?);
                }
            }
        }
        if statuses.is_empty() {
            return None;
        }
        Some(StatusOnly {
            object: parsed.object,
            statuses,
        })
    }
}

impl<'a> RawStatus<'a> {
    fn parse(raw: &'a RawValue) -> Option<RawStatus<'a>> {
        let members: Vec<(&'a str, &'a RawValue)> = serde_json::from_str(raw.get())
            .ok()
            .map(|m: Members<'a>| m.0)?;
        // A repeated key is read one way by `Value` (the last wins) and another by
        // typed structs: leave it to the general path.
        for (i, (key, _)) in members.iter().enumerate() {
            if members[..i].iter().any(|(k, _)| k == key) {
                return None;
            }
        }
        Some(RawStatus { members })
    }

    /// The member `key`'s JSON text.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// Whether the object has the member `key` (whatever its value, `null` too).
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// A member read as [`lenient::as_string`] reads it.
    pub fn string(&self, key: &str) -> Option<String> {
        self.value(key).as_ref().and_then(lenient::as_string)
    }

    /// A member that is a JSON string, as it is (unescaped).
    pub fn str(&self, key: &str) -> Option<String> {
        match self.value(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn id(&self) -> Option<String> {
        self.string("id")
    }

    pub fn status(&self) -> StatusKind {
        StatusKind::parse(self.string("status").as_deref().unwrap_or(""))
    }

    pub fn type_name(&self) -> Option<String> {
        self.string("type")
    }

    pub fn timestamp(&self) -> Option<i64> {
        self.value("timestamp").as_ref().and_then(lenient::as_i64)
    }

    pub fn recipient_id(&self) -> Option<String> {
        self.string("recipient_id")
    }

    pub fn recipient_user_id(&self) -> Option<String> {
        self.string("recipient_user_id")
    }

    /// `errors[]`, read as [`Status::errors`](super::Status) is.
    pub fn errors(&self) -> Vec<ApiError> {
        match self.value("errors") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|e| ApiError::deserialize(e).ok())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The object without the members `except` names, as JSON text (each member's
    /// text as Meta wrote it); `None` when nothing is left.
    pub fn rest(&self, except: &[&str]) -> Option<String> {
        let mut out = String::new();
        for (key, value) in self.members.iter().filter(|(k, _)| !except.contains(k)) {
            out.push(if out.is_empty() { '{' } else { ',' });
            // Keys were borrowed from the body, so they hold no escapes.
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            out.push_str(value.get());
        }
        if out.is_empty() {
            return None;
        }
        out.push('}');
        Some(out)
    }

    /// A member as a `Value`: scalars are a few bytes, and reading them through
    /// `Value` keeps this path's leniency exactly that of the general one.
    fn value(&self, key: &str) -> Option<Value> {
        self.get(key)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    }
}

/// An object's members in order, borrowed (a key written with escapes cannot be).
struct Members<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(8);
                while let Some((key, value)) = map.next_entry::<&'de str, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Any JSON value, walked as `serde_json::Value` would be parsed (every number and
/// string read, the same depth limit) and dropped without allocating.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Valid;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_unit<E>(self) -> Result<Valid, E> {
                Ok(Valid)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Valid, A::Error> {
                while seq.next_element::<Valid>()?.is_some() {}
                Ok(Valid)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Valid, A::Error> {
                while map.next_entry::<Valid, Valid>()?.is_some() {}
                Ok(Valid)
            }
        }
        d.deserialize_any(Visit)
    }
}
