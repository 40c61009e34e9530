//! Words: the enums whose values are words on the wire, in the database and on screen
//! (statuses, decisions, modes), and how queries name them.

use serde::de::{Deserialize, Deserializer, Error};

/// The words of an enum (statuses, decisions, modes) are its serde names, written once by
/// its `rename_all`; strum derives the same names (a test checks they agree), and every
/// use (showing, parsing queries and stored columns, listing the known ones in an error,
/// SQL) goes through this trait, never a hand-written list.
pub trait Word: Copy + 'static + strum::VariantArray + Into<&'static str> + std::str::FromStr {
    fn as_str(self) -> &'static str {
        self.into()
    }

    fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    /// Every word, in declaration order.
    fn all() -> &'static [Self] {
        Self::VARIANTS
    }

    /// Every word, for an error message: `a, b, c`.
    fn known() -> String {
        Self::VARIANTS.iter().map(|word| word.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The words as an SQL list: `'a', 'b'` (they are plain identifiers).
    fn sql(words: &[Self]) -> String {
        words.iter().map(|word| format!("'{}'", word.as_str())).collect::<Vec<_>>().join(", ")
    }
}

impl<T: Copy + 'static + strum::VariantArray + Into<&'static str> + std::str::FromStr> Word for T {}

/// A comma-separated list of words in a query parameter (`status=queued,running`);
/// empty or absent means no filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words<T>(pub Vec<T>);

impl<T> Default for Words<T> {
    fn default() -> Self {
        Words(Vec::new())
    }
}

impl<T> Words<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, word: &T) -> bool
    where
        T: PartialEq,
    {
        self.0.contains(word)
    }
}

impl<'de, T: Word> Deserialize<'de> for Words<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.split(',')
            .map(|word| word.trim_matches(' '))
            .filter(|word| !word.is_empty())
            .map(|word| T::parse(word).ok_or_else(|| D::Error::custom(unknown::<T>(word))))
            .collect::<Result<_, _>>()
            .map(Words)
    }
}

/// A query parameter naming one word; empty means not given.
pub fn optional_word<'de, D: Deserializer<'de>, T: Word>(deserializer: D) -> Result<Option<T>, D::Error> {
    match Option::<String>::deserialize(deserializer)?.as_deref().map(|text| text.trim_matches(' ')) {
        None | Some("") => Ok(None),
        Some(word) => T::parse(word).map(Some).ok_or_else(|| D::Error::custom(unknown::<T>(word))),
    }
}

fn unknown<T: Word>(word: &str) -> String {
    format!("unknown status {word:?}; known: {}", T::known())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        ApprovalKind, ApprovalPolicy, ApprovalStatus, Decision, ExecutionStatus, OutputStream, Role, SandboxApplied,
        SandboxMode, SessionStatus,
    };

    /// The words strum derives and the OpenAPI document lists are the serde names: the
    /// words are written in one place.
    fn agree<T: Word + serde::Serialize + utoipa::PartialSchema + std::fmt::Debug>() {
        let schema = serde_json::to_value(T::schema()).unwrap();
        for word in T::VARIANTS {
            assert_eq!(serde_json::to_value(word).unwrap(), word.as_str(), "{word:?}");
            assert_eq!(T::parse(word.as_str()).map(|w| w.as_str()), Some(word.as_str()));
            assert!(schema["enum"].as_array().unwrap().contains(&word.as_str().into()), "{word:?} in {schema}");
        }
    }

    #[test]
    fn every_word_is_its_serde_name() {
        agree::<ExecutionStatus>();
        agree::<ApprovalStatus>();
        agree::<ApprovalKind>();
        agree::<Decision>();
        agree::<SessionStatus>();
        agree::<Role>();
        agree::<OutputStream>();
        agree::<ApprovalPolicy>();
        agree::<SandboxMode>();
        agree::<SandboxApplied>();
    }

    #[derive(serde::Deserialize, Debug)]
    struct Query {
        #[serde(default)]
        status: Words<ExecutionStatus>,
        #[serde(default, deserialize_with = "optional_word")]
        session: Option<SessionStatus>,
    }

    #[test]
    fn queries_name_words_and_unknown_ones_are_listed() {
        let query: Query = serde_urlencoded::from_str("status=queued,%20running,&session=").unwrap();
        assert_eq!(query.status, Words(vec![ExecutionStatus::Queued, ExecutionStatus::Running]));
        assert_eq!(query.session, None);
        let query: Query = serde_urlencoded::from_str("session=idle").unwrap();
        assert_eq!((query.status, query.session), (Words(vec![]), Some(SessionStatus::Idle)));
        let wrong = serde_urlencoded::from_str::<Query>("status=queued,bogus").unwrap_err().to_string();
        assert!(wrong.contains("unknown status \"bogus\"; known: pending_approval, queued, running"), "{wrong}");
    }
}
