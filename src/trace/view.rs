//! One typed view of a stored trace line, borrowed from it: the query engine,
//! key event notifications (and so the console, which reads through the query
//! engine) and the tables of `kubetrail query` and TraceQuery status read a
//! line through [`View`]. [`super::Record`] is the writer's side of the same
//! field names.

use serde::Deserialize;
use std::borrow::Cow;

/// The fields of a trace line that are read back (the bodies are not).
/// A string is borrowed from the line unless it has JSON escapes.
#[derive(Debug, Default, Deserialize)]
pub struct View<'a> {
    #[serde(borrow, default)]
    pub trace_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub trace_name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub trace_rating: Cow<'a, str>,
    #[serde(borrow, default)]
    pub service_type: Cow<'a, str>,
    #[serde(borrow, default)]
    pub resource_type: Cow<'a, str>,
    #[serde(borrow, default)]
    pub resource_name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow, default)]
    pub user: Cow<'a, str>,
    #[serde(borrow, default)]
    pub impersonated_user: Option<Cow<'a, str>>,
    #[serde(default)]
    pub code: Option<i32>,
    #[serde(borrow, default)]
    pub time: Cow<'a, str>,
    #[serde(borrow, default)]
    pub source_ips: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub stage: Cow<'a, str>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(borrow, default)]
    pub user_agent: Cow<'a, str>,
}

/// A field of [`View`], matched without allocating the key.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(field_identifier, rename_all = "snake_case")]
pub enum Field {
    TraceId,
    TraceName,
    TraceRating,
    ServiceType,
    ResourceType,
    ResourceName,
    Namespace,
    User,
    ImpersonatedUser,
    Code,
    Time,
    SourceIps,
    Stage,
    ReadOnly,
    UserAgent,
    #[serde(other)]
    Other,
}

impl Field {
    const fn bit(self) -> u16 {
        match self {
            Field::Other => 0,
            f => 1 << (f as u16),
        }
    }
}

/// A set of [`Field`]s: what a reader needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields(u16);

impl Fields {
    /// Every field of the view.
    pub const ALL: Fields = Fields((1 << Field::Other as u16) - 1);

    pub const fn of(fields: &[Field]) -> Fields {
        let (mut mask, mut i) = (0, 0);
        while i < fields.len() {
            mask |= fields[i].bit();
            i += 1;
        }
        Fields(mask)
    }

    pub fn with(self, f: Field) -> Fields {
        Fields(self.0 | f.bit())
    }

    pub fn has(self, f: Field) -> bool {
        self.0 & f.bit() != 0
    }
}

/// A string borrowed from the line unless it has escapes (`Cow<str>` on its own
/// always allocates).
#[derive(Deserialize)]
struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> View<'a> {
    /// Reads every field of a trace line.
    pub fn parse(line: &'a [u8]) -> serde_json::Result<View<'a>> {
        serde_json::from_slice(line)
    }

    /// Reads only `fields` (the others stay empty) and stops as soon as all of
    /// them were seen: the request and response bodies, most of a line's bytes,
    /// come after them in a delivered trace and are never parsed. `None` for a
    /// line that is not a JSON object.
    pub fn read(line: &'a [u8], fields: Fields) -> Option<View<'a>> {
        use serde::de::DeserializeSeed;
        let mut view = View::default();
        let mut complete = false;
        let mut de = serde_json::Deserializer::from_slice(line);
        let result = Seed {
            view: &mut view,
            complete: &mut complete,
            needed: fields.0,
        }
        .deserialize(&mut de);
        (result.is_ok() || complete).then_some(view)
    }

    /// The verb, the first word of `trace_name` (`delete secrets`).
    pub fn verb(&self) -> &str {
        self.trace_name.split(' ').next().unwrap_or("")
    }
}

/// Fills a [`View`] with the `needed` fields, ending the parse early (with a
/// marker error and `complete` set) once all were seen.
struct Seed<'v, 'a> {
    view: &'v mut View<'a>,
    complete: &'v mut bool,
    needed: u16,
}

impl<'de, 'v> serde::de::DeserializeSeed<'de> for Seed<'v, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'v> serde::de::Visitor<'de> for Seed<'v, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a trace object")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<(), M::Error> {
        let mut seen = 0u16;
        while let Some(key) = m.next_key::<Field>()? {
            let bit = key.bit();
            if bit & self.needed == 0 {
                m.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            let v = &mut *self.view;
            let text = |m: &mut M| m.next_value::<Borrowed<'de>>().map(|b| b.0);
            match key {
                Field::TraceId => v.trace_id = text(&mut m)?,
                Field::TraceName => v.trace_name = text(&mut m)?,
                Field::TraceRating => v.trace_rating = text(&mut m)?,
                Field::ServiceType => v.service_type = text(&mut m)?,
                Field::ResourceType => v.resource_type = text(&mut m)?,
                Field::ResourceName => v.resource_name = text(&mut m)?,
                Field::Namespace => v.namespace = text(&mut m)?,
                Field::User => v.user = text(&mut m)?,
                Field::Time => v.time = text(&mut m)?,
                Field::Stage => v.stage = text(&mut m)?,
                Field::UserAgent => v.user_agent = text(&mut m)?,
                Field::ImpersonatedUser => {
                    v.impersonated_user = m.next_value::<Option<Borrowed<'de>>>()?.map(|b| b.0)
                }
                Field::Code => v.code = m.next_value::<Option<i32>>()?,
                Field::ReadOnly => v.read_only = m.next_value::<Option<bool>>()?.unwrap_or(false),
                Field::SourceIps => {
                    let ips: Option<Vec<Borrowed<'de>>> = m.next_value()?;
                    v.source_ips = ips.unwrap_or_default().into_iter().map(|b| b.0).collect();
                }
                Field::Other => unreachable!("bit 0 is never needed"),
            }
            seen |= bit;
            if seen == self.needed {
                *self.complete = true;
                return Err(serde::de::Error::custom("view complete"));
            }
        }
        *self.complete = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"time":"2026-11-24T01:00:00Z","trace_id":"a\"1","trace_name":"delete secrets","trace_rating":"warning",
        "service_type":"core","resource_type":"secrets","resource_name":"db","namespace":"shop","user":"alice",
        "impersonated_user":null,"code":403,"source_ips":["10.0.0.1"],"stage":"ResponseComplete","read_only":false,
        "user_agent":"kubectl","request":{"kind":"Secret","data":{"k":"AAAA"}},"response":"#;

    /// A partial read stops after the fields asked for: a line cut off in its
    /// body still gives them, borrowed unless escaped; the rest stay empty.
    #[test]
    fn a_partial_read_stops_early_and_borrows() {
        let v = View::read(
            LINE.as_bytes(),
            Fields::of(&[Field::TraceId, Field::Code, Field::SourceIps]),
        )
        .unwrap();
        assert_eq!(v.trace_id, "a\"1");
        assert!(matches!(v.trace_id, Cow::Owned(_)), "an escaped string is copied");
        assert_eq!(v.code, Some(403));
        assert_eq!(v.source_ips, ["10.0.0.1"]);
        assert_eq!(v.user, "", "not asked for");
        let all = View::read(LINE.as_bytes(), Fields::ALL.with(Field::Time)).unwrap();
        assert!(matches!(all.user, Cow::Borrowed("alice")));
        assert_eq!(
            (all.verb(), all.user_agent.as_ref(), all.stage.as_ref()),
            ("delete", "kubectl", "ResponseComplete")
        );
        assert_eq!(all.impersonated_user, None);
        assert!(
            View::parse(LINE.as_bytes()).is_err(),
            "a whole parse needs a whole line"
        );
        assert!(View::read(b"[1]", Fields::ALL).is_none());
    }

    /// A whole parse and a read of every field agree.
    #[test]
    fn parse_and_read_agree() {
        let line = LINE.to_string() + "null}";
        let a = View::parse(line.as_bytes()).unwrap();
        let b = View::read(line.as_bytes(), Fields::ALL).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(Fields::ALL.has(Field::UserAgent) && !Fields::ALL.has(Field::Other));
    }
}
