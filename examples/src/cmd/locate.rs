//! Maps a field path (`spec.scalingRules[1].threshold`) back to its line and column in
//! the YAML text it came from, through serde_yaml_ng's own marks: the document is read
//! again with a seed that walks down the path and fails at the node it names, and the
//! error carries the position of that node.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A mapping key.
    Field(String),
    /// A list index.
    Index(usize),
}

/// Splits `spec.scalingRules[1].threshold` into its steps (`(document)` is the root).
pub(crate) fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    if path == "(document)" {
        return out;
    }
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Field(name.to_owned()));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// The 1-based line and column of the node at `path` in document `doc` of `text` (a key
/// for a field, the item for an index); for a path that is not there, the deepest part of
/// it that is.
pub(crate) fn locate(text: &str, doc: usize, path: &[Seg]) -> Option<(usize, usize)> {
    (0..=path.len()).rev().find_map(|n| locate_exact(text, doc, &path[..n]))
}

fn locate_exact(text: &str, doc: usize, path: &[Seg]) -> Option<(usize, usize)> {
    let document = serde_yaml_ng::Deserializer::from_str(text).nth(doc)?;
    match Find(path).deserialize(document) {
        // () is reported as an error, which carries the mark; `Ok` means not there.
        Ok(()) => None,
        Err(e) if e.to_string().contains(HERE) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

/// The message of the error that marks the node found.
const HERE: &str = "\u{0}here";

struct Find<'a>(&'a [Seg]);

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(FindVisitor(self.0))
    }
}

struct FindVisitor<'a>(&'a [Seg]);

macro_rules! scalar {
    ($($name:ident: $ty:ty),*) => {$(
        fn $name<E: de::Error>(self, _: $ty) -> Result<(), E> {
            if self.0.is_empty() { Err(E::custom(HERE)) } else { Ok(()) }
        }
    )*};
}

impl<'de> Visitor<'de> for FindVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        if self.0.is_empty() { Err(E::custom(HERE)) } else { Ok(()) }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Field(want), rest)) = self.0.split_first() else {
            return if self.0.is_empty() { Err(de::Error::custom(HERE)) } else { Ok(()) };
        };
        while let Some(matched) = map.next_key_seed(Key { want, last: rest.is_empty() })? {
            if matched {
                return map.next_value_seed(Find(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return if self.0.is_empty() { Err(de::Error::custom(HERE)) } else { Ok(()) };
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Find(rest))?;
        Ok(())
    }
}

/// A mapping key: `true` when it is the one wanted; the error that marks it when it is
/// the last step of the path.
struct Key<'a> {
    want: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.last) {
            (true, true) => Err(E::custom(HERE)),
            (matched, _) => Ok(matched),
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "a: 1\n---\nspec:\n  maxReplicas: 5\n  scalingRules:\n    - metric: queue_length\n      threshold: 10\n    - {metric: latency, threshold: 0}\n";

    #[test]
    fn paths_map_to_their_line_and_column() {
        let at = |p: &str| locate(TEXT, 1, &parse_path(p));
        assert_eq!(at("spec.maxReplicas"), Some((4, 3)));
        assert_eq!(at("spec.scalingRules[0].threshold"), Some((7, 7)));
        assert_eq!(at("spec.scalingRules[1].threshold"), Some((8, 25)));
        assert_eq!(at("spec.scalingRules[1]"), Some((8, 7)));
        // A field that is not there: where its parent is.
        assert_eq!(at("spec.scalingRules[0].window"), Some((6, 7)));
        assert_eq!(at("(document)"), Some((3, 1)));
        assert_eq!(locate(TEXT, 0, &parse_path("a")), Some((1, 1)));
        assert_eq!(locate(TEXT, 5, &parse_path("a")), None);
    }

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("spec.scalingRules[1].threshold"),
            [
                Seg::Field("spec".into()),
                Seg::Field("scalingRules".into()),
                Seg::Index(1),
                Seg::Field("threshold".into())
            ]
        );
        assert_eq!(parse_path("a[0][2]"), [Seg::Field("a".into()), Seg::Index(0), Seg::Index(2)]);
    }
}
