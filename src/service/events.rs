//! The event stream bureaus follow: who sees what, and pages after a cursor.

use super::auth::Principal;
use super::error::{AppError, AppResult};
use crate::store::Conn;
use crate::store::events::{self, Cursor, StoredEvent};

/// Events per page read from the database.
pub const PAGE: i64 = 500;

/// The region filter of a caller: bureaus see events where they are a party ("" = all).
pub fn scope(who: &Principal) -> AppResult<String> {
    who.require_bureau_or_operator()?;
    Ok(match who {
        Principal::Bureau { region } => region.clone(),
        _ => String::new(),
    })
}

pub fn parse_cursor(s: &str) -> AppResult<Cursor> {
    Cursor::decode(s).ok_or_else(|| {
        AppError::invalid(
            "cursor",
            "not a cursor this server issued (use \"\" to start)",
        )
    })
}

/// The next page of events after `cursor` visible in `region`.
pub async fn page(conn: &mut Conn, cursor: &Cursor, region: &str) -> AppResult<Vec<StoredEvent>> {
    Ok(events::after(conn, cursor, region, PAGE).await?)
}
