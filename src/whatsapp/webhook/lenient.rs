//! Deserializers that take what Meta's payloads actually contain: numbers as
//! strings, strings as numbers, placeholders where numbers belong. A value of the
//! wrong kind becomes `None` instead of failing the object around it.
//!
//! The field deserializers are visitors rather than a detour through
//! `serde_json::Value`, so a field costs at most the one allocation of its string.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::Value;

pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Lenient(Kind::String)).map(|s| match s {
        Scalar::String(s) => Some(s),
        _ => None,
    })
}

pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(Lenient(Kind::I64)).map(|s| match s {
        Scalar::I64(n) => Some(n),
        _ => None,
    })
}

pub fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_any(Lenient(Kind::F64)).map(|s| match s {
        Scalar::F64(n) => Some(n),
        _ => None,
    })
}

pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(Lenient(Kind::Bool)).map(|s| match s {
        Scalar::Bool(b) => Some(b),
        _ => None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    String,
    I64,
    F64,
    Bool,
}

enum Scalar {
    String(String),
    I64(i64),
    F64(f64),
    Bool(bool),
    Nothing,
}

struct Lenient(Kind);

impl Lenient {
    fn parse(&self, s: &str) -> Scalar {
        let parsed = match self.0 {
            Kind::String => return Scalar::String(s.to_owned()),
            Kind::I64 => s.trim().parse().ok().map(Scalar::I64),
            Kind::F64 => s
                .trim()
                .parse()
                .ok()
                .filter(|f: &f64| f.is_finite())
                .map(Scalar::F64),
            Kind::Bool => s.trim().parse().ok().map(Scalar::Bool),
        };
        parsed.unwrap_or(Scalar::Nothing)
    }
}

impl<'de> Visitor<'de> for Lenient {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(self.parse(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(match self.0 {
            Kind::String => Scalar::String(v),
            _ => self.parse(&v),
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(match self.0 {
            Kind::String => Scalar::String(v.to_string()),
            Kind::I64 => Scalar::I64(v),
            Kind::F64 => Scalar::F64(v as f64),
            Kind::Bool => Scalar::Nothing,
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(match (self.0, i64::try_from(v)) {
            (Kind::String, _) => Scalar::String(v.to_string()),
            (Kind::I64, Ok(n)) => Scalar::I64(n),
            (Kind::F64, _) => Scalar::F64(v as f64),
            _ => Scalar::Nothing,
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(match self.0 {
            Kind::String => Scalar::String(
                serde_json::Number::from_f64(v).map_or_else(String::new, |n| n.to_string()),
            ),
            Kind::F64 if v.is_finite() => Scalar::F64(v),
            _ => Scalar::Nothing,
        })
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(match self.0 {
            Kind::String => Scalar::String(v.to_string()),
            Kind::Bool => Scalar::Bool(v),
            _ => Scalar::Nothing,
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Nothing)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Nothing)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nothing)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default, deserialize_with = "super::string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "super::i64")]
        i: Option<i64>,
        #[serde(default, deserialize_with = "super::f64")]
        f: Option<f64>,
        #[serde(default, deserialize_with = "super::bool")]
        b: Option<bool>,
    }

    fn probe(v: serde_json::Value) -> (Option<String>, Option<i64>, Option<f64>, Option<bool>) {
        let p = Probe::deserialize(&v).expect("lenient fields never fail");
        (p.s, p.i, p.f, p.b)
    }

    #[test]
    fn fields_take_numbers_as_strings_strings_as_numbers_and_drop_the_rest() {
        assert_eq!(
            probe(json!({"s": 16505551234u64, "i": "1750000000", "f": "-1.5", "b": "true"})),
            (
                Some("16505551234".into()),
                Some(1_750_000_000),
                Some(-1.5),
                Some(true)
            )
        );
        assert_eq!(
            probe(json!({"s": "x", "i": 7, "f": 2, "b": false})),
            (Some("x".into()), Some(7), Some(2.0), Some(false))
        );
        assert_eq!(
            probe(json!({"s": {"a": [1]}, "i": "<TIMESTAMP>", "f": "NaN", "b": [true]})),
            (None, None, None, None)
        );
        assert_eq!(
            probe(json!({"s": null, "i": 1.5, "f": null, "b": 1})),
            (None, None, None, None)
        );
        assert_eq!(probe(json!({})), (None, None, None, None));
    }
}
