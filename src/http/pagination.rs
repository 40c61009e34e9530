//! Lists are pages: `{items, next_cursor}`. `?limit=` (1–500, default 50) and `?cursor=`
//! (opaque: pass back the `next_cursor` you were given).

use std::str::FromStr;

use serde::Deserialize;
use utoipa::IntoParams;

use super::problem::ApiError;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// `?limit=&cursor=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Where the previous page ended (its `next_cursor`).
    #[param(value_type = Option<i64>)]
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, not {n}"))),
        }
    }

    pub fn cursor<K: FromStr>(&self) -> Result<Option<K>, ApiError> {
        self.cursor
            .as_deref()
            .map(|text| text.parse().map_err(|_| ApiError::bad_request(format!("cursor {text:?} is not valid"))))
            .transpose()
    }
}

/// `?limit=&cursor=` of a list ordered by name (profiles, providers): the cursor is the
/// last name of the previous page. For the document; the handlers read a [`PageQuery`]
/// and a [`NameCursor`].
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NamePageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The previous page's `next_cursor` (a name).
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    pub cursor: Option<String>,
}

/// A name as a cursor: a cursor that is not a valid name is refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NameCursor(pub String);

impl FromStr for NameCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        crate::domain::validate_name("cursor", text).map(|()| NameCursor(text.to_owned()))
    }
}

impl std::fmt::Display for NameCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::domain::Page;

impl<T> Page<T> {
    /// Pages a list already sorted by `key`, ascending.
    pub fn of_sorted<K>(items: Vec<T>, key: impl Fn(&T) -> K, query: &PageQuery) -> Result<Page<T>, ApiError>
    where
        K: Ord + FromStr + ToString,
    {
        let limit = query.limit()?;
        let after: Option<K> = query.cursor()?;
        let mut rest: Vec<T> = items
            .into_iter()
            .filter(|item| after.as_ref().is_none_or(|after| key(item) > *after))
            .take(limit + 1)
            .collect();
        let next_cursor = if rest.len() > limit {
            rest.truncate(limit);
            rest.last().map(|last| key(last).to_string())
        } else {
            None
        };
        Ok(Page { items: rest, next_cursor, pruned_at: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_whole_list_once() {
        let items: Vec<i64> = (1..=7).collect();
        let mut seen = Vec::new();
        let mut query = PageQuery { limit: Some(3), cursor: None };
        loop {
            let page = Page::of_sorted(items.clone(), |i| *i, &query).unwrap();
            seen.extend(page.items);
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert!(Page::of_sorted(items.clone(), |i| *i, &PageQuery { limit: Some(0), cursor: None }).is_err());
        assert!(Page::of_sorted(items, |i| *i, &PageQuery { limit: None, cursor: Some("x".into()) }).is_err());
    }
}
