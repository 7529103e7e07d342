//! Pure domain rules: identifiers, money, kinds, dates, policies, filings — no I/O, no async.

pub mod adjudication;
pub mod error;
pub mod filing;
pub mod ids;
pub mod kinds;
pub mod money;
pub mod netting;
pub mod policy;
pub mod regions;
pub mod time;

pub use error::{DomainError, DomainResult};
