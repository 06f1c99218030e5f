//! What list routes share: query values read with a clear 422 naming the
//! field (`number`, `one_of`), and store reads run off the HTTP threads
//! (`off_thread`). It never decides what a route answers.

use actix_web::web;

use crate::http::error::HttpError;
use crate::store::StoreError;

/// A number query value in `range`, or `default` when absent or empty.
pub(crate) fn number<T>(
    name: &str,
    value: Option<&str>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, HttpError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value {
        None | Some("") => Ok(default),
        Some(v) => match v.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(HttpError::invalid(format!(
                "{name}: {v:?} must be a number from {} to {}",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// One of a closed set of names (a status, say), or `None` when absent or
/// empty; otherwise a 422 listing the names.
pub(crate) fn one_of<T>(
    name: &str,
    value: Option<&str>,
    parse: impl Fn(&str) -> Option<T>,
    names: &[&str],
) -> Result<Option<T>, HttpError> {
    match value {
        None | Some("") => Ok(None),
        Some(s) => parse(s).map(Some).ok_or_else(|| {
            HttpError::invalid(format!("{name}: {s:?} is not one of {}", names.join(", ")))
        }),
    }
}

/// Run a read of `reader` (a view over the store) off the HTTP thread.
pub(crate) async fn off_thread<R, T>(
    reader: R,
    f: impl FnOnce(&R) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpError>
where
    R: Send + 'static,
    T: Send + 'static,
{
    web::block(move || f(&reader))
        .await
        .map_err(|e| HttpError::unavailable(e.to_string()))?
        .map_err(|e| HttpError::unavailable(format!("the store failed: {e}")))
}
