//! Environment overrides. Every key `section.key` of the file can be set by
//! `EVRELAY_SECTION_KEY`; keys the Datadog Agent also has keep its names too
//! ([`AGENT_NAMES`]). The list of keys and the type of each is not kept by hand: it
//! is read from the file's own types, by deserializing [`File`] once with a
//! [`Tracer`] that records every key it is asked for and what type it wants.

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::Value;

use super::File;
use super::problem::Problem;

/// The Datadog Agent's names for keys evrelay shares with it. `EVRELAY_…` wins
/// over these when both are set.
pub const AGENT_NAMES: &[(&str, &str)] = &[
    ("datadog.api_key", "DD_API_KEY"),
    ("datadog.site", "DD_SITE"),
    ("datadog.url", "DD_URL"),
    ("datadog.cluster_name", "DD_CLUSTER_NAME"),
    ("datadog.hostname", "DD_HOSTNAME"),
    ("journal.data_dir", "EVRELAY_DATA_DIR"),
    ("leader.namespace", "DD_KUBE_RESOURCES_NAMESPACE"),
    ("leader.lease_duration_seconds", "DD_LEADER_LEASE_DURATION"),
];

/// What a key's value is, for reading it from an environment string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated in the environment.
    List,
    /// JSON in the environment (a list of mappings).
    Json,
}

/// One key of the file: `section.key` and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub path: String,
    pub kind: Kind,
}

/// Every key of the file, in declaration order, read from its types.
pub fn keys() -> Vec<Key> {
    let mut found = Vec::new();
    // The tracer answers every question with a neutral value, so this only fails if
    // a type asks for something the tracer does not know: a bug the tests catch.
    File::deserialize(Tracer {
        path: String::new(),
        depth: 0,
        found: &mut found,
    })
    .expect("the configuration's types can be traced");
    found
}

/// The `EVRELAY_*` name of a key path.
pub fn env_name(path: &str) -> String {
    format!("EVRELAY_{}", path.replace('.', "_").to_uppercase())
}

/// Sets in `tree` every key the environment names. All problems at once.
pub fn apply(tree: &mut Value, env: &impl Fn(&str) -> Option<String>) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    for Key { path, kind } in keys() {
        let own = env_name(&path);
        let agent = AGENT_NAMES
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, v)| *v);
        let Some((var, raw)) = [Some(own.as_str()), agent]
            .into_iter()
            .flatten()
            .find_map(|v| env(v).map(|raw| (v, raw)))
        else {
            continue;
        };
        let value = match parse(kind, var, &raw) {
            Ok(v) => v,
            Err((message, fix)) => {
                problems.push(Problem::new(path.as_str(), message, fix));
                continue;
            }
        };
        let (section, key) = path.split_once('.').expect("paths have a section");
        let Some(root) = tree.as_object_mut() else {
            problems.push(Problem::new(
                "(file)",
                "the top level is not a mapping",
                "write the file as `section: {key: value}`",
            ));
            break;
        };
        let entry = root
            .entry(section)
            .or_insert_with(|| Value::Object(Default::default()));
        match entry.as_object_mut() {
            Some(map) => {
                map.insert(key.into(), value);
            }
            None => problems.push(Problem::new(
                section,
                "is not a mapping",
                format!("write `{section}:` as a mapping of keys"),
            )),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The value of `raw` as a key of `kind` wants it; else what is wrong, and the fix.
fn parse(kind: Kind, var: &str, raw: &str) -> Result<Value, (String, String)> {
    Ok(match kind {
        Kind::Str => Value::String(raw.to_owned()),
        Kind::Int => match raw.trim().parse::<u64>() {
            Ok(n) => Value::from(n),
            Err(_) => {
                return Err((
                    format!("{var}={raw:?} is not a whole number"),
                    format!("set {var} to a non-negative integer"),
                ));
            }
        },
        Kind::List => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Kind::Json => serde_json::from_str::<Value>(raw).map_err(|e| {
            (
                format!("{var} is not JSON: {e}"),
                format!(
                    r#"set {var} to a JSON list such as [{{"kind":"Pod","reasons":["BackOff"]}}]"#
                ),
            )
        })?,
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => {
                return Err((
                    format!("{var}={raw:?} is not true or false"),
                    format!("set {var} to true or false"),
                ));
            }
        },
    })
}

/// A deserializer that hands out neutral values and records, for every field of
/// the file's sections, its path and the type its `Deserialize` asked for.
struct Tracer<'a> {
    path: String,
    /// 0: the file; 1: a section; 2: a key's value.
    depth: u8,
    found: &'a mut Vec<Key>,
}

impl Tracer<'_> {
    fn record(&mut self, kind: Kind) {
        if self.depth == 2 {
            self.found.push(Key {
                path: self.path.clone(),
                kind,
            });
        }
    }
}

/// Fields of a struct, each value traced one level down.
struct Fields<'a, 'b> {
    tracer: &'b mut Tracer<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_, '_> {
    type Error = de::value::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let name: de::value::StrDeserializer<'_, Self::Error> = (*field).into_deserializer();
        seed.deserialize(name).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let field = self.fields[self.next];
        self.next += 1;
        let path = match self.tracer.path.as_str() {
            "" => field.to_owned(),
            parent => format!("{parent}.{field}"),
        };
        seed.deserialize(Tracer {
            path,
            depth: self.tracer.depth + 1,
            found: &mut *self.tracer.found,
        })
    }
}

/// A list of one element, traced to learn whether its items are strings or
/// mappings.
struct OneElement<'a> {
    kind: &'a mut Option<Kind>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = de::value::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        if self.kind.is_some() {
            return Ok(None);
        }
        seed.deserialize(Element { kind: self.kind }).map(Some)
    }
}

/// One element of a list: a string makes the list [`Kind::List`], a mapping
/// [`Kind::Json`].
struct Element<'a> {
    kind: &'a mut Option<Kind>,
}

impl<'de> Deserializer<'de> for Element<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("a list element of an untraceable type"))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        *self.kind = Some(Kind::List);
        visitor.visit_str("")
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.kind = Some(Kind::Json);
        // No fields: the element's own defaults fill it.
        visitor.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(
            &str,
            &str,
        )>()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(format!(
            "{}: a type the tracer does not know",
            self.path
        )))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if self.depth >= 2 {
            return Err(de::Error::custom(format!(
                "{}: a nested mapping",
                self.path
            )));
        }
        visitor.visit_map(Fields {
            tracer: &mut self,
            fields,
            next: 0,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_string<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record(Kind::Str);
        visitor.visit_str("")
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record(Kind::Bool);
        visitor.visit_bool(false)
    }

    fn deserialize_u64<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Self::Error> {
        self.record(Kind::Int);
        visitor.visit_u64(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Self::Error> {
        let mut kind = None;
        let value = visitor.visit_seq(OneElement { kind: &mut kind })?;
        self.record(kind.unwrap_or(Kind::List));
        Ok(value)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u128 f32 f64 char bytes byte_buf unit unit_struct
        tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_traced_with_its_kind() {
        let keys = keys();
        let kind = |path: &str| {
            keys.iter()
                .find(|k| k.path == path)
                .unwrap_or_else(|| panic!("{path} not traced in {keys:?}"))
                .kind
        };
        assert_eq!(kind("datadog.api_key"), Kind::Str);
        assert_eq!(kind("datadog.service_check_interval_seconds"), Kind::Int);
        assert_eq!(kind("events.bundle_unspecified_events"), Kind::Bool);
        assert_eq!(kind("events.filtered_event_types"), Kind::List);
        assert_eq!(kind("events.collected_event_types"), Kind::Json);
        assert_eq!(kind("journal.data_dir"), Kind::Str);
        assert_eq!(kind("ship.max_events"), Kind::Int);
        assert_eq!(kind("leader.namespace"), Kind::Str);
        assert_eq!(kind("admin.listen_address"), Kind::Str);
        assert_eq!(keys.len(), 46, "{keys:?}");
        assert_eq!(kind("datadog.tags"), Kind::List);
    }

    #[test]
    fn every_agent_name_names_a_key() {
        let keys = keys();
        for (path, var) in AGENT_NAMES {
            assert!(
                keys.iter().any(|k| k.path == *path),
                "{var} names no key: {path}"
            );
        }
    }
}
