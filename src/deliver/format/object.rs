//! A JSON object written from borrowed parts of the event, in order: rendering a body copies
//! none of the event's values.

use crate::event::SandboxEvent;
use serde::Serialize;
use serde_json::{Map, Value};

/// Keys are distinct (each body lists its own).
#[derive(Default)]
pub(super) struct Object<'a>(Vec<(&'a str, Part<'a>)>);

pub(super) enum Part<'a> {
    Text(std::borrow::Cow<'a, str>),
    Json(&'a Value),
    Map(&'a Map<String, Value>),
}

impl<'a> Object<'a> {
    pub(super) fn push(&mut self, key: &'a str, part: Part<'a>) {
        self.0.push((key, part));
    }

    /// The event's fields `from`, as `to`, when present and not null.
    pub(super) fn copy_fields(&mut self, event: &'a SandboxEvent, pairs: &[(&'a str, &'a str)]) {
        for (from, to) in pairs {
            if let Some(v) = event.raw().get(*from).filter(|v| !v.is_null()) {
                self.push(to, Part::Json(v));
            }
        }
    }

    /// The object's JSON bytes.
    pub(super) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a JSON object always serializes")
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, part)| (key, part)))
    }
}

impl Serialize for Part<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Part::Text(text) => serializer.serialize_str(text),
            Part::Json(value) => value.serialize(serializer),
            Part::Map(map) => map.serialize(serializer),
        }
    }
}
