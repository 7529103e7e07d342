//! Principals and bearer tokens. Tokens are random, shown once, and stored only as SHA-256
//! hashes; a token names one role and scope.

use super::error::{AppError, AppResult};
use crate::domain::ids::{InstitutionCode, RegionCode};
use crate::store::access::{self, TokenRow};
use crate::store::{Conn, Db};
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Runs clearing and administration; may do everything.
    Operator { token_id: String },
    /// The insurance bureau of one region.
    Bureau { region: String },
    /// A designated hospital or pharmacy, acting only as itself.
    Institution { code: String },
}

impl Principal {
    /// Stable key for idempotency and audit: "operator:<token id>", "bureau:<region>",
    /// "institution:<code>".
    pub fn key(&self) -> String {
        match self {
            Principal::Operator { token_id } => format!("operator:{token_id}"),
            Principal::Bureau { region } => format!("bureau:{region}"),
            Principal::Institution { code } => format!("institution:{code}"),
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator { .. })
    }

    pub fn require_operator(&self) -> AppResult<()> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(AppError::denied(format!(
                "{} may not do this: operators only",
                self.key()
            )))
        }
    }

    /// Operators, or the bureau of `region`.
    pub fn require_region(&self, region: &str) -> AppResult<()> {
        match self {
            Principal::Operator { .. } => Ok(()),
            Principal::Bureau { region: own } if own == region => Ok(()),
            _ => Err(AppError::denied(format!(
                "{} may not act for region {region}",
                self.key()
            ))),
        }
    }

    /// Operators or any bureau.
    pub fn require_bureau_or_operator(&self) -> AppResult<()> {
        match self {
            Principal::Operator { .. } | Principal::Bureau { .. } => Ok(()),
            Principal::Institution { .. } => Err(AppError::denied(format!(
                "{} may not do this: bureaus and operators only",
                self.key()
            ))),
        }
    }
}

/// What a token grants, as requested by `medsettle token issue`.
#[derive(Debug, Clone)]
pub enum Grant {
    Operator,
    Bureau(RegionCode),
    Institution(InstitutionCode),
}

/// SHA-256 of a presented token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates a token; returns (token_id, token). The token itself is never stored.
pub async fn issue(db: &Db, grant: &Grant, label: &str) -> AppResult<(String, String)> {
    let now = Utc::now();
    let secret: [u8; 32] = rand::random();
    let token = format!("ms_{}", hex::encode(secret));
    let token_id = crate::store::new_id("T", now);
    let (role, scope) = match grant {
        Grant::Operator => ("operator", String::new()),
        Grant::Bureau(r) => ("bureau", r.as_str().to_owned()),
        Grant::Institution(c) => ("institution", c.as_str().to_owned()),
    };
    let row = TokenRow {
        token_id: token_id.clone(),
        role: role.into(),
        scope,
        label: label.into(),
    };
    let mut conn = db.begin().await?;
    access::insert_token(&mut conn, &hash_token(&token), &row, now).await?;
    conn.commit().await?;
    Ok((token_id, token))
}

/// Revokes a token by id; false when no live token has that id.
pub async fn revoke(db: &Db, token_id: &str) -> AppResult<bool> {
    let mut conn = db.begin().await?;
    let n = access::revoke_token(&mut conn, token_id, Utc::now()).await?;
    conn.commit().await?;
    Ok(n > 0)
}

/// How long a verified token is trusted without asking the database again (revocation takes
/// effect within this time).
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Entries kept at most; the cache is cleared when full.
const CACHE_MAX: usize = 10_000;

/// Verified tokens by hash, so that a busy caller costs no database round trip per call.
#[derive(Default)]
pub struct TokenCache {
    map: RwLock<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl TokenCache {
    fn get(&self, hash: &[u8; 32]) -> Option<Principal> {
        let map = self.map.read().ok()?;
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(p, _)| p.clone())
    }

    fn put(&self, hash: [u8; 32], p: Principal) {
        if let Ok(mut map) = self.map.write() {
            if map.len() >= CACHE_MAX {
                map.clear();
            }
            map.insert(hash, (p, Instant::now()));
        }
    }
}

/// Resolves a bearer token to its principal.
pub async fn authenticate(db: &Db, cache: &TokenCache, token: &str) -> AppResult<Principal> {
    let hash = hash_token(token);
    if let Some(p) = cache.get(&hash) {
        return Ok(p);
    }
    let mut conn: Conn = db.read().await?;
    let row = access::token_by_hash(&mut conn, &hash)
        .await?
        .ok_or_else(|| AppError::Unauthenticated("unknown or revoked token".into()))?;
    let p = match row.role.as_str() {
        "operator" => Principal::Operator {
            token_id: row.token_id,
        },
        "bureau" => Principal::Bureau { region: row.scope },
        "institution" => Principal::Institution { code: row.scope },
        other => {
            return Err(AppError::Internal(anyhow::anyhow!(
                "token with unknown role {other:?}"
            )));
        }
    };
    cache.put(hash, p.clone());
    Ok(p)
}
