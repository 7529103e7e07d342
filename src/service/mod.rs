//! Use cases: one database transaction per call, orchestrating domain rules, the store and the
//! ledger. Nothing here knows about gRPC except that idempotent answers are stored as encoded
//! protobuf responses (see `mutate`).

pub mod auth;
pub mod catalogue;
pub mod clearing;
pub mod clearing_export;
pub mod clock;
pub mod error;
pub mod events;
pub mod filings;
pub mod institutions;
pub mod ledger;
pub mod mutate;
pub mod persons;
pub mod policies;
pub mod reconciliation;
pub mod regions;
pub mod settlement;

pub use error::{AppError, AppResult};

use crate::store::{Conn, Db};
use auth::{Principal, TokenCache};

/// The application: the database and what is shared between calls.
pub struct App {
    pub db: Db,
    /// Business time: the system clock, moved only by tests.
    pub clock: clock::Clock,
    /// Clearing settings (deadline rule, prepayment warning line).
    pub clearing: clearing::ClearingConfig,
    /// The Prometheus metrics of this application (served by `metrics::serve`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    tokens: TokenCache,
    swipes: std::sync::OnceLock<settlement::swipe_batch::Batcher>,
}

impl App {
    pub fn new(db: Db) -> Self {
        App {
            db,
            clock: clock::Clock::default(),
            clearing: clearing::ClearingConfig::default(),
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
            tokens: TokenCache::default(),
            swipes: std::sync::OnceLock::new(),
        }
    }

    /// The same application with other clearing settings.
    pub fn with_clearing(mut self, cfg: clearing::ClearingConfig) -> Self {
        self.clearing = cfg;
        self
    }

    /// Resolves a bearer token to its principal.
    pub async fn authenticate(&self, token: &str) -> AppResult<Principal> {
        auth::authenticate(&self.db, &self.tokens, token).await
    }

    /// The group-commit queue of card swipes (its writers start on first use: on PostgreSQL
    /// inside the server's runtime, on SQLite on a thread of their own).
    pub fn swipes(&self) -> &settlement::swipe_batch::Batcher {
        self.swipes.get_or_init(|| {
            settlement::swipe_batch::Batcher::start(
                self.db.clone(),
                self.clock.clone(),
                self.metrics.clone(),
            )
        })
    }

    /// A connection for a read-only use case.
    pub async fn read(&self) -> AppResult<Conn> {
        Ok(self.db.read().await?)
    }
}

/// A page of results and the token of the next page ("" when it is the last).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// Decodes a request's page token into the key to continue after.
pub fn page_after(token: &str) -> AppResult<String> {
    crate::store::page_after(token)
        .ok_or_else(|| AppError::invalid("page_token", "not a token returned by this service"))
}

/// Checks free text: at most `max` characters, no control characters.
pub fn text(field: &str, s: &str, max: usize) -> AppResult<String> {
    if s.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("at most {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(s.trim().to_owned())
}

/// Like [`text`], and not empty.
pub fn required_text(field: &str, s: &str, max: usize) -> AppResult<String> {
    let t = text(field, s, max)?;
    if t.is_empty() {
        return Err(AppError::invalid(field, "is required"));
    }
    Ok(t)
}
