//! Pages of query results: a [`PageRequest`] (a limit with an enforced maximum and an
//! opaque [`Cursor`]), and a [`Page`] (items, the next cursor, the total when known).
//!
//! A listing query carries a `PageRequest` beside its own typed filters; its handler
//! filters, sorts by a unique key, and cuts the page with [`Page::of_sorted`], which puts
//! the last item's key in the next cursor. Cursors are opaque to callers: they hand back
//! what they were given. Bad limits and cursors are `INVALID_ARGUMENT`s naming the field
//! (`"limit"` or `"cursor"`, also as `{"field": …}` in the error's data).
//!
//! ```
//! use flext_types::{FlextResult, Page, PageRequest};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct ListAccounts {
//!     /// A typed filter: accounts holding at least this much.
//!     min_balance: Option<u64>,
//!     #[serde(default)]
//!     page: PageRequest,
//! }
//!
//! fn list(accounts: &[(String, u64)], query: &ListAccounts) -> FlextResult<Page<(String, u64)>> {
//!     let matching = accounts
//!         .iter()
//!         .filter(|(_, balance)| query.min_balance.is_none_or(|min| *balance >= min))
//!         .cloned();
//!     Page::of_sorted(matching, &query.page, |(id, _)| id.clone())
//! }
//!
//! # fn main() -> FlextResult<()> {
//! let accounts: Vec<(String, u64)> = (1..=5).map(|n| (format!("acc-{n}"), n * 100)).collect();
//! let first = list(&accounts, &ListAccounts { min_balance: Some(200), page: PageRequest::first(2) })?;
//! assert_eq!(first.items.len(), 2);
//! assert_eq!(first.total, Some(4));
//! let next = first.next_cursor.clone().expect("more to come");
//! let second = list(&accounts, &ListAccounts { min_balance: Some(200), page: PageRequest::after(next, 2) })?;
//! assert_eq!(second.items[0].0, "acc-4");
//! assert!(second.next_cursor.is_none());
//! # Ok(())
//! # }
//! ```

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{FlextError, FlextResult};

/// The largest page [`Page::of_sorted`] hands out.
pub const MAX_PAGE_LIMIT: u32 = 1_000;

/// The page size of a request that names none.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;

/// What cursors made here start with: a format version, so the format can change while
/// old cursors are still refused clearly.
const CURSOR_PREFIX: &str = "c1.";

/// Which page of a listing to return: at most `limit` items, after `cursor` (the first
/// page without one).
///
/// In JSON: `{"limit": 20, "cursor": "c1.…"}`, both optional (`limit` 50 by default);
/// other fields are refused. A limit that is not an integer does not decode; one outside
/// `1..=max` is an `INVALID_ARGUMENT` naming `limit` when the page is cut.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor: Option<Cursor>,
}

fn default_limit() -> i64 {
    i64::from(DEFAULT_PAGE_LIMIT)
}

impl PageRequest {
    /// The first page, of at most `limit` items.
    pub fn first(limit: u32) -> Self {
        Self {
            limit: i64::from(limit),
            cursor: None,
        }
    }

    /// The page after `cursor` (a page's [`next_cursor`](Page::next_cursor)), of at most
    /// `limit` items.
    pub fn after(cursor: Cursor, limit: u32) -> Self {
        Self {
            limit: i64::from(limit),
            cursor: Some(cursor),
        }
    }

    /// The limit asked for, as given (it may be out of range; see
    /// [`limit_within`](Self::limit_within)).
    pub fn requested_limit(&self) -> i64 {
        self.limit
    }

    /// The cursor, if this is not the first page.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    /// The limit, checked to lie in `1..=max`; otherwise an `INVALID_ARGUMENT` naming
    /// `limit` and the range.
    pub fn limit_within(&self, max: u32) -> FlextResult<u32> {
        u32::try_from(self.limit)
            .ok()
            .filter(|limit| (1..=max).contains(limit))
            .ok_or_else(|| {
                FlextError::invalid_argument(format!(
                    "Invalid limit: {}. It must be between 1 and {max}",
                    self.limit
                ))
                .with_data(json!({"field": "limit", "value": self.limit, "max": max}))
            })
    }

    /// The key the cursor holds (the last item of the previous page), or `None` on the
    /// first page; a cursor that does not hold a `K` is an `INVALID_ARGUMENT` naming
    /// `cursor`.
    pub fn position<K: DeserializeOwned>(&self) -> FlextResult<Option<K>> {
        self.cursor.as_ref().map(Cursor::decode).transpose()
    }
}

impl Default for PageRequest {
    /// The first page of [`DEFAULT_PAGE_LIMIT`] items.
    fn default() -> Self {
        Self::first(DEFAULT_PAGE_LIMIT)
    }
}

/// An opaque position in a listing: the key of the last item a page returned. Callers
/// hand it back as they got it (a string in JSON).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// A cursor holding `key`.
    pub fn encode<K: Serialize>(key: &K) -> FlextResult<Self> {
        let json = serde_json::to_vec(key).map_err(|e| {
            FlextError::serialization(format!("A cursor's key does not serialize: {e}"))
        })?;
        let mut text = String::with_capacity(CURSOR_PREFIX.len() + json.len() * 2);
        text.push_str(CURSOR_PREFIX);
        for byte in json {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Ok(Self(text))
    }

    /// The key the cursor holds; a cursor not made by [`Cursor::encode`], or holding
    /// another type, is an `INVALID_ARGUMENT` naming `cursor`.
    pub fn decode<K: DeserializeOwned>(&self) -> FlextResult<K> {
        let invalid = |why: &str| {
            FlextError::invalid_argument(format!(
                "Invalid cursor: {why}; pass back the next_cursor of a previous page"
            ))
            .with_data(json!({"field": "cursor"}))
        };
        let hex = self
            .0
            .strip_prefix(CURSOR_PREFIX)
            .ok_or_else(|| invalid("it was not made by this listing"))?;
        if hex.len() % 2 != 0 {
            return Err(invalid("it is cut short"));
        }
        let bytes = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| invalid("it holds characters a cursor never has"))?;
        serde_json::from_slice(&bytes).map_err(|_| invalid("it belongs to another listing"))
    }

    /// The cursor's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for Cursor {
    /// A cursor received as text (checked when it is decoded).
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cursor").field(&self.0).finish()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// One page of a listing: its items, the cursor of the next page (none on the last), and
/// the number of items the listing holds, when it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The page's items, in the listing's order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
    /// How many items the whole listing (its filters applied) holds, if known.
    pub total: Option<u64>,
}

impl<T> Page<T> {
    /// The page `request` asks for of `items`, which come sorted by `key` ascending with
    /// no key twice (a listing's unique sort key: an id, or a pair like `(name, id)`); at
    /// most [`MAX_PAGE_LIMIT`] items. `total` counts every item.
    ///
    /// Errors: a limit outside `1..=MAX_PAGE_LIMIT` or a bad cursor (`INVALID_ARGUMENT`
    /// naming the field); items out of order or with a key twice (`OPERATION_ERROR`: the
    /// listing's bug, which would skip or repeat items across pages).
    pub fn of_sorted<I, K, F>(items: I, request: &PageRequest, key: F) -> FlextResult<Self>
    where
        I: IntoIterator<Item = T>,
        K: Serialize + DeserializeOwned + Ord,
        F: Fn(&T) -> K,
    {
        Self::of_sorted_within(items, request, MAX_PAGE_LIMIT, key)
    }

    /// [`of_sorted`](Self::of_sorted) with a maximum page size of `max`.
    pub fn of_sorted_within<I, K, F>(
        items: I,
        request: &PageRequest,
        max: u32,
        key: F,
    ) -> FlextResult<Self>
    where
        I: IntoIterator<Item = T>,
        K: Serialize + DeserializeOwned + Ord,
        F: Fn(&T) -> K,
    {
        let limit = request.limit_within(max)? as usize;
        let after: Option<K> = request.position()?;
        let mut page = Vec::with_capacity(limit.min(64));
        let mut more = false;
        let mut total = 0u64;
        let mut previous: Option<K> = None;
        for item in items {
            let k = key(&item);
            if previous.as_ref().is_some_and(|p| *p >= k) {
                return Err(FlextError::operation(
                    "A listing's items are not sorted by a unique key: pages would skip or \
                     repeat items",
                ));
            }
            total += 1;
            if after.as_ref().is_none_or(|after| k > *after) {
                if page.len() < limit {
                    page.push(item);
                } else {
                    more = true;
                }
            }
            previous = Some(k);
        }
        let next_cursor = match page.last() {
            Some(last) if more => Some(Cursor::encode(&key(last))?),
            _ => None,
        };
        Ok(Self {
            items: page,
            next_cursor,
            total: Some(total),
        })
    }

    /// The same page with each item mapped by `f` (a read model's rows to a response).
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_constants::ErrorCode;

    fn ids(n: u64) -> Vec<u64> {
        (1..=n).collect()
    }

    #[test]
    fn pages_walk_the_listing_once_each_item() {
        let mut seen = Vec::new();
        let mut request = PageRequest::first(3);
        loop {
            let page = Page::of_sorted(ids(10), &request, |n| *n).unwrap();
            assert_eq!(page.total, Some(10));
            assert!(page.items.len() <= 3);
            seen.extend(page.items);
            match page.next_cursor {
                Some(cursor) => request = PageRequest::after(cursor, 3),
                None => break,
            }
        }
        assert_eq!(seen, ids(10));
        // An exact multiple ends without an empty page.
        let page = Page::of_sorted(ids(3), &PageRequest::first(3), |n| *n).unwrap();
        assert!(page.next_cursor.is_none());
        let empty = Page::of_sorted(Vec::<u64>::new(), &PageRequest::default(), |n| *n).unwrap();
        assert_eq!(
            (empty.items.len(), empty.total, empty.next_cursor),
            (0, Some(0), None)
        );
    }

    #[test]
    fn a_cursor_survives_items_added_and_removed_before_it() {
        let first = Page::of_sorted(ids(6), &PageRequest::first(2), |n| *n).unwrap();
        let cursor = first.next_cursor.unwrap();
        // Item 1 is gone and 0 came in: the next page still starts after 2.
        let next = Page::of_sorted([0, 2, 3, 4], &PageRequest::after(cursor, 2), |n| *n).unwrap();
        assert_eq!(next.items, [3, 4]);
    }

    #[test]
    fn limits_out_of_range_are_invalid_naming_the_field() {
        for limit in [0, 1_001] {
            let error = Page::of_sorted(ids(3), &PageRequest::first(limit), |n| *n).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidArgument);
            assert_eq!(
                error.message(),
                format!("Invalid limit: {limit}. It must be between 1 and 1000")
            );
            assert_eq!(
                error.data().map(|d| d["field"].clone()),
                Some(json!("limit"))
            );
        }
        let negative: PageRequest = serde_json::from_value(json!({"limit": -4})).unwrap();
        assert_eq!(
            negative.limit_within(10).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            PageRequest::first(1_000).limit_within(MAX_PAGE_LIMIT),
            Ok(1_000)
        );
        assert_eq!(PageRequest::first(1).limit_within(1), Ok(1));
        assert!(Page::of_sorted_within(ids(3), &PageRequest::first(3), 2, |n| *n).is_err());
    }

    #[test]
    fn bad_cursors_are_invalid_naming_the_field() {
        let other = Cursor::encode(&"a string key").unwrap();
        for cursor in ["", "c1.", "c1.zz", "c1.7", "c2.31", "31", other.as_str()] {
            let request = PageRequest::after(Cursor::from(cursor.to_owned()), 2);
            let error = Page::of_sorted(ids(3), &request, |n| *n).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{cursor:?}");
            assert!(error.message().starts_with("Invalid cursor: "), "{error}");
            assert_eq!(
                error.data().map(|d| d["field"].clone()),
                Some(json!("cursor"))
            );
        }
    }

    #[test]
    fn unsorted_or_repeated_keys_are_the_listings_bug() {
        for items in [vec![1u64, 3, 2], vec![1, 1]] {
            let error = Page::of_sorted(items, &PageRequest::default(), |n| *n).unwrap_err();
            assert_eq!(error.code(), ErrorCode::OperationError);
        }
    }

    #[test]
    fn requests_and_pages_cross_as_json() {
        let request: PageRequest = serde_json::from_value(json!({})).unwrap();
        assert_eq!(request, PageRequest::default());
        assert_eq!(request.requested_limit(), 50);
        let page = Page::of_sorted(ids(5), &PageRequest::first(2), |n| *n).unwrap();
        let text = serde_json::to_value(&page).unwrap();
        assert_eq!(text["items"], json!([1, 2]));
        assert_eq!(text["total"], 5);
        let cursor = text["next_cursor"].as_str().unwrap().to_owned();
        let next: PageRequest =
            serde_json::from_value(json!({"limit": 2, "cursor": cursor})).unwrap();
        assert_eq!(next.position::<u64>(), Ok(Some(2)));
        assert!(serde_json::from_value::<PageRequest>(json!({"limit": 2, "page": 3})).is_err());
        assert!(serde_json::from_value::<PageRequest>(json!({"limit": "ten"})).is_err());
        let back: Page<u64> = serde_json::from_value(text).unwrap();
        assert_eq!(back, page);
        assert_eq!(page.map(|n| n * 10).items, [10, 20]);
    }

    #[test]
    fn a_cursor_is_text_that_comes_back_as_its_key() {
        let cursor = Cursor::encode(&("acc", 7)).unwrap();
        assert!(cursor.as_str().starts_with("c1."), "{cursor}");
        assert_eq!(cursor.to_string(), cursor.as_str());
        assert_eq!(
            format!("{cursor:?}"),
            format!("Cursor({:?})", cursor.as_str())
        );
        assert_eq!(Cursor::from(cursor.as_str().to_owned()), cursor);
        assert_eq!(cursor.decode::<(String, u32)>(), Ok(("acc".to_owned(), 7)));
        let request = PageRequest::after(cursor.clone(), 5);
        assert_eq!(request.cursor(), Some(&cursor));
        assert_eq!(PageRequest::first(5).cursor(), None);
    }

    #[test]
    fn compound_keys_order_ties() {
        let rows = vec![("ann", 2), ("bob", 1), ("bob", 3), ("cy", 4)];
        let first = Page::of_sorted(rows.clone(), &PageRequest::first(2), |r| {
            (r.0.to_owned(), r.1)
        })
        .unwrap();
        assert_eq!(first.items, [("ann", 2), ("bob", 1)]);
        let next = PageRequest::after(first.next_cursor.unwrap(), 2);
        let second = Page::of_sorted(rows, &next, |r| (r.0.to_owned(), r.1)).unwrap();
        assert_eq!(second.items, [("bob", 3), ("cy", 4)]);
    }
}
