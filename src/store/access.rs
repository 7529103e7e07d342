//! API tokens, idempotency records and the audit log.

use super::cells::{Cell, Cells};
use super::query::Query;
use super::query::Row as _;
use super::{Conn, Engine, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub token_id: String,
    /// "operator", "bureau" or "institution".
    pub role: String,
    /// Region code for bureaus, institution code for institutions, "" for operators.
    pub scope: String,
    pub label: String,
}

crate::direct_row!(TokenRow {
    token_id,
    role,
    scope,
    label,
});

pub async fn insert_token(
    c: &mut Conn,
    hash: &[u8],
    t: &TokenRow,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let sql = "INSERT INTO api_token (token_hash, token_id, role, scope, label, created_at) \
               VALUES ($1, $2, $3, $4, $5, $6)";
    Query::new(sql)
        .bind(hash)
        .bind(&t.token_id)
        .bind(&t.role)
        .bind(&t.scope)
        .bind(&t.label)
        .bind(now)
        .execute(c)
        .await?;
    Ok(())
}

/// The live (not revoked) token with this SHA-256 hash.
pub async fn token_by_hash(c: &mut Conn, hash: &[u8]) -> StoreResult<Option<TokenRow>> {
    let sql = "SELECT token_id, role, scope, label FROM api_token \
               WHERE token_hash = $1 AND revoked_at IS NULL";
    Query::new(sql).bind(hash).fetch_optional(c).await
}

pub async fn revoke_token(c: &mut Conn, token_id: &str, now: DateTime<Utc>) -> StoreResult<u64> {
    let sql = "UPDATE api_token SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL";
    Query::new(sql).bind(token_id).bind(now).execute(c).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdempotencyRow {
    pub rpc: String,
    pub payload_hash: Vec<u8>,
    /// The first answer's bytes; empty for a swipe's, whose answer is its settlement as booked
    /// (`setl_id`).
    pub response: Vec<u8>,
    /// The settlement the call booked, if it booked one.
    pub setl_id: Option<String>,
}

crate::direct_row!(IdempotencyRow {
    rpc,
    payload_hash,
    response,
    setl_id,
});

pub async fn find_idempotent(
    c: &mut Conn,
    principal: &str,
    request_id: &str,
) -> StoreResult<Option<IdempotencyRow>> {
    // Through the view: on SQLite the key is maintained in batches (see `store::derived`).
    let sql = "SELECT rpc, payload_hash, response, setl_id FROM idempotency_by_key \
               WHERE principal = $1 AND request_id = $2";
    Query::new(sql)
        .bind(principal)
        .bind(request_id)
        .fetch_optional(c)
        .await
}

/// Claims a request id for a call in progress (empty response). Returns false when the id is
/// already taken; on PostgreSQL the insert first waits for a concurrent claimer to commit or
/// roll back, so a twin call sees the committed first answer instead of racing it.
pub async fn claim_idempotent(
    c: &mut Conn,
    tail: &Mutex<RequestIdTail>,
    principal: &str,
    request_id: &str,
    rpc: &str,
    payload_hash: &[u8],
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    // SQLite: looked up in the writers' map of the tail or the index table (never a scan of the
    // tail); write transactions are IMMEDIATE, so no other writer can store the key meanwhile.
    let held = c
        .with_sqlite(|x| {
            let mut tail = lock(tail)?;
            tail.refresh(x)?;
            tail.holds(x, principal, request_id)
        })
        .await?;
    let sql = match held {
        Some(true) => return Ok(false),
        Some(false) => {
            "INSERT INTO idempotency (principal, request_id, rpc, payload_hash, response, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)"
        }
        None => {
            "INSERT INTO idempotency (principal, request_id, rpc, payload_hash, response, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (principal, request_id) DO NOTHING"
        }
    };
    let empty: &[u8] = &[];
    let n = Query::new(sql)
        .bind(principal)
        .bind(request_id)
        .bind(rpc)
        .bind(payload_hash)
        .bind(empty)
        .bind(now)
        .execute(c)
        .await?;
    Ok(n == 1)
}

/// Stores the answer of a claimed request id, and the settlement the call booked (if it booked
/// one): a settlement is found by its request id through this row (see
/// `settlement::settlement_by_request`).
pub async fn complete_idempotent(
    c: &mut Conn,
    tail: &Mutex<RequestIdTail>,
    principal: &str,
    request_id: &str,
    response: &[u8],
    setl_id: Option<&str>,
) -> StoreResult<()> {
    // SQLite: the claim is among the rows stored since the map was refreshed, in this same
    // transaction (no other writer has run since): found without a scan of the tail.
    let answer = |sql: &'static str| {
        Query::new(sql)
            .bind(principal)
            .bind(request_id)
            .bind(response)
            .bind(setl_id)
    };
    let q = match c.engine() {
        Engine::Sqlite => answer(
            "UPDATE idempotency SET response = $3, setl_id = $4 \
             WHERE rowid > $5 AND principal = $1 AND request_id = $2",
        )
        .bind(lock(tail)?.last),
        Engine::Postgres => answer(
            "UPDATE idempotency SET response = $3, setl_id = $4 \
             WHERE principal = $1 AND request_id = $2",
        ),
    };
    let n = q.execute(c).await?;
    if n != 1 {
        return Err(StoreError::Other(anyhow::anyhow!(
            "the claim of request id {request_id} is missing ({n} rows)"
        )));
    }
    Ok(())
}

pub async fn insert_idempotent(
    c: &mut Conn,
    principal: &str,
    request_id: &str,
    row: &IdempotencyRow,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let sql = match c.engine() {
        // Unless the key is stored, looked up through the view (the table has no unique key: see
        // [`RequestIdTail`]); rare enough (the 冲正 of an id that booked nothing) for a scan of
        // the tail.
        Engine::Sqlite => {
            "INSERT INTO idempotency (principal, request_id, rpc, payload_hash, response, \
             created_at) SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS \
             (SELECT 1 FROM idempotency_by_key WHERE principal = $1 AND request_id = $2)"
        }
        Engine::Postgres => {
            "INSERT INTO idempotency (principal, request_id, rpc, payload_hash, response, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)"
        }
    };
    let n = Query::new(sql)
        .bind(principal)
        .bind(request_id)
        .bind(&row.rpc)
        .bind(&row.payload_hash)
        .bind(&row.response)
        .bind(now)
        .execute(c)
        .await?;
    if n == 0 {
        // SQLite: the key is stored already (PostgreSQL's primary key says so itself).
        return Err(StoreError::Unique {
            constraint: "idempotency (principal, request_id)".into(),
        });
    }
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub audit_id: String,
    pub principal: String,
    pub rpc: String,
    pub request_id: String,
    pub outcome: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

crate::direct_row!(AuditRow {
    audit_id,
    principal,
    rpc,
    request_id,
    outcome,
    detail,
    at,
});

pub async fn insert_audit(c: &mut Conn, a: &AuditRow) -> StoreResult<()> {
    let sql = "INSERT INTO audit_log (audit_id, principal, rpc, request_id, outcome, detail, at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7)";
    Query::new(sql)
        .bind(&a.audit_id)
        .bind(&a.principal)
        .bind(&a.rpc)
        .bind(&a.request_id)
        .bind(&a.outcome)
        .bind(&a.detail)
        .bind(a.at)
        .execute(c)
        .await?;
    Ok(())
}

/// Audit records newest first, before `before` ("" = from the newest), optionally of one
/// principal.
pub async fn list_audit(
    c: &mut Conn,
    principal: &str,
    before: &str,
    limit: i64,
) -> StoreResult<Vec<AuditRow>> {
    // Two statement texts: `($1 = '' OR principal = $1)` in one would keep SQLite's planner off
    // the (principal, audit_id) index table, scanning the whole log for one principal's records.
    const COLS: &str = "audit_id, principal, rpc, request_id, outcome, detail, at";
    if principal.is_empty() {
        let sql = format!(
            "SELECT {COLS} FROM audit_log WHERE ($1 = '' OR audit_id < $1) \
             ORDER BY audit_id DESC LIMIT $2"
        );
        return Query::new(&sql).bind(before).bind(limit).fetch_all(c).await;
    }
    // Through the view: on SQLite the (principal, audit_id) index is maintained in batches (see
    // `store::derived`).
    let sql = format!(
        "SELECT {COLS} FROM audit_log WHERE audit_id IN (SELECT audit_id FROM audit_by_principal \
         WHERE principal = $1 AND ($2 = '' OR audit_id < $2) ORDER BY audit_id DESC LIMIT $3) \
         ORDER BY audit_id DESC"
    );
    Query::new(&sql)
        .bind(principal)
        .bind(before)
        .bind(limit)
        .fetch_all(c)
        .await
}

/// The first answer under a request id, stored once the call it answers has run.
#[derive(Debug, Clone)]
pub struct Answer {
    pub principal: String,
    pub request_id: String,
    pub rpc: String,
    pub payload_hash: Vec<u8>,
    pub response: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// The settlement the call booked (a swipe's), found by its request id through this row.
    pub setl_id: Option<String>,
}

/// What follows the answers a swipe batch inserts on PostgreSQL (`store::batch`): a request id
/// already stored (a concurrent call got there first) is left alone, and each answer stored
/// returns a row, so that the batch counts them. Batches insert in key order, so two writers on
/// PostgreSQL wait for each other's keys in one order (no deadlock). PostgreSQL only: on SQLite
/// the table has no unique key, and its one writer at a time checks the keys it inserts first
/// (see [`RequestIdTail`]).
pub const ANSWERS_STORED: &str = " ON CONFLICT (principal, request_id) DO NOTHING RETURNING 1";

impl Cells for Answer {
    const TABLE: &'static str = "idempotency";
    const COLUMNS: &'static str =
        "principal, request_id, rpc, payload_hash, response, created_at, setl_id";
    const N: usize = 7;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.principal));
        out(Cell::Text(&self.request_id));
        out(Cell::Text(&self.rpc));
        out(Cell::Bytes(&self.payload_hash));
        out(Cell::Bytes(&self.response));
        out(Cell::Time(self.created_at));
        out(Cell::OptText(self.setl_id.as_deref()));
    }
}

#[derive(sqlx::FromRow)]
struct KeyedAnswer {
    principal: String,
    request_id: String,
    rpc: String,
    payload_hash: Vec<u8>,
    response: Vec<u8>,
    setl_id: Option<String>,
}

/// SQLite: the idempotency rows above the merged part of their key (`idempotency_ix`: see
/// migration 0017 and [`super::derived`]), by key, kept for every writer of the database
/// ([`super::Db::request_ids`]). Looked up through the view, the tail is scanned for each key
/// (and a tail row holds its answer: a hospital call's is kilobytes); a writer instead, inside its
/// write transaction (SQLite runs one at a time) and before it stores a request id, learns the
/// rows committed since the map was last brought up to date — any writer's: rowids only ascend,
/// and idempotency rows are never deleted — and forgets those a merge has moved into the index
/// table. A key is then found in this map or in the index table, never by a scan.
#[derive(Debug, Default)]
pub struct RequestIdTail {
    /// The merged `upto` this map was last trimmed to.
    upto: i64,
    /// The last rowid read into the map.
    last: i64,
    rows: HashMap<(String, String), i64>,
}

impl RequestIdTail {
    /// Brings the map up to what is committed (see the type's doc); inside a write transaction,
    /// before it stores a request id of its own.
    fn refresh(&mut self, x: &rusqlite::Connection) -> StoreResult<()> {
        let upto: i64 = x
            .prepare_cached("SELECT upto FROM derived_index WHERE name = 'idempotency'")?
            .query_row([], |r| r.get(0))?;
        if upto < self.upto || upto > self.last {
            // A database changed under the map (restored, say), or merged past all it knows.
            self.rows.clear();
            self.last = upto;
        } else if upto > self.upto {
            self.rows.retain(|_, row| *row > upto);
        }
        self.upto = upto;
        let mut st = x.prepare_cached(
            "SELECT rowid, principal, request_id FROM idempotency WHERE rowid > ?1 ORDER BY rowid",
        )?;
        let mut rows = st.query([self.last])?;
        while let Some(r) = rows.next()? {
            let row: i64 = r.get(0)?;
            self.rows.insert((r.get(1)?, r.get(2)?), row);
            self.last = row;
        }
        Ok(())
    }

    /// Whether the key is stored (after [`RequestIdTail::refresh`]): in the map, or merged.
    fn holds(
        &self,
        x: &rusqlite::Connection,
        principal: &str,
        request_id: &str,
    ) -> StoreResult<bool> {
        if self
            .rows
            .contains_key(&(principal.to_owned(), request_id.to_owned()))
        {
            return Ok(true);
        }
        let merged = x
            .prepare_cached(
                "SELECT 1 FROM idempotency_ix WHERE principal = ?1 AND request_id = ?2",
            )?
            .query_row([principal, request_id], |_| Ok(()))
            .optional()?;
        Ok(merged.is_some())
    }
}

fn lock(tail: &Mutex<RequestIdTail>) -> StoreResult<std::sync::MutexGuard<'_, RequestIdTail>> {
    tail.lock()
        .map_err(|_| StoreError::Other(anyhow::anyhow!("the request ids' map is poisoned")))
}

/// [`find_many`] on PostgreSQL: the keys as two arrays (one statement text for any number of
/// keys), each looked up by the primary key in a LATERAL subquery. Its LIMIT keeps the planner
/// from flattening the subquery into a join: the generic plan PostgreSQL caches for a statement
/// first run while the table is small (a new database) joined the keys by hashing a scan of the
/// whole table, and a connection kept that plan as the table grew — the swipe writer's lookup took
/// 0.4 ms with 1,000 answers stored and 3.9 ms with 16,000 (BENCHMARKS.md, session 29).
pub const FIND_MANY_PG: &str = "SELECT k.principal, k.request_id, \
     i.rpc, i.payload_hash, i.response, i.setl_id \
     FROM UNNEST($1::text[], $2::text[]) AS k(principal, request_id) \
     CROSS JOIN LATERAL (SELECT rpc, payload_hash, response, setl_id FROM idempotency \
     WHERE principal = k.principal AND request_id = k.request_id LIMIT 1) i";

/// The stored first answers of many (principal, request id) pairs; on SQLite with the map of the
/// tail `tail` if the caller keeps one (the swipe writer, inside its write transaction).
pub async fn find_many(
    c: &mut Conn,
    keys: &[(String, String)],
    tail: Option<&Mutex<RequestIdTail>>,
) -> StoreResult<Vec<(String, String, IdempotencyRow)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // SQLite: one prepared lookup per key (see `super::direct`).
    let on_sqlite = c
        .with_sqlite(|x| {
            let mut out = Vec::new();
            let Some(tail) = tail else {
                let mut st = x.prepare_cached(
                    "SELECT rpc, payload_hash, response, setl_id FROM idempotency_by_key \
                     WHERE principal = ?1 AND request_id = ?2",
                )?;
                for (p, r) in keys {
                    let found = st
                        .query_row(rusqlite::params![p, r], IdempotencyRow::direct)
                        .optional()?;
                    if let Some(row) = found {
                        out.push((p.clone(), r.clone(), row));
                    }
                }
                return Ok(out);
            };
            let mut tail = lock(tail)?;
            tail.refresh(x)?;
            let mut by_row = x.prepare_cached(
                "SELECT rpc, payload_hash, response, setl_id FROM idempotency WHERE rowid = ?1",
            )?;
            let mut by_key = x.prepare_cached(
                "SELECT i.rpc, i.payload_hash, i.response, i.setl_id \
                 FROM idempotency_ix x CROSS JOIN idempotency i ON i.rowid = x.row \
                 WHERE x.principal = ?1 AND x.request_id = ?2",
            )?;
            for key in keys {
                let found = match tail.rows.get(key) {
                    Some(row) => by_row.query_row([row], IdempotencyRow::direct).optional()?,
                    None => by_key
                        .query_row(rusqlite::params![key.0, key.1], IdempotencyRow::direct)
                        .optional()?,
                };
                if let Some(row) = found {
                    out.push((key.0.clone(), key.1.clone(), row));
                }
            }
            Ok(out)
        })
        .await?;
    if let Some(found) = on_sqlite {
        return Ok(found);
    }
    let principals: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
    let request_ids: Vec<&str> = keys.iter().map(|(_, r)| r.as_str()).collect();
    let rows: Vec<KeyedAnswer> = sqlx::query_as(FIND_MANY_PG)
        .bind(&principals)
        .bind(&request_ids)
        .fetch_all(c.pg()?)
        .await?;
    Ok(rows
        .into_iter()
        .map(|k| {
            let row = IdempotencyRow {
                rpc: k.rpc,
                payload_hash: k.payload_hash,
                response: k.response,
                setl_id: k.setl_id,
            };
            (k.principal, k.request_id, row)
        })
        .collect())
}

impl Cells for AuditRow {
    const TABLE: &'static str = "audit_log";
    const COLUMNS: &'static str = "audit_id, principal, rpc, request_id, outcome, detail, at";
    const N: usize = 7;
    fn cells<'a>(&'a self, out: &mut dyn FnMut(Cell<'a>)) {
        out(Cell::Text(&self.audit_id));
        out(Cell::Text(&self.principal));
        out(Cell::Text(&self.rpc));
        out(Cell::Text(&self.request_id));
        out(Cell::Text(&self.outcome));
        out(Cell::Text(&self.detail));
        out(Cell::Time(self.at));
    }
}

#[cfg(test)]
mod tests {
    use super::{RequestIdTail, find_many};
    use crate::store::{Db, DbConfig};

    /// The writers' map of the request ids' tail follows what is committed: rows another
    /// writer stored, a merge moving rows into the index table, a merge past everything the map
    /// knows, and a database whose merged mark went back (restored); and every key is found
    /// through the map or the index table, whichever holds it.
    #[tokio::test]
    async fn the_tail_map_follows_the_committed_rows() -> anyhow::Result<()> {
        let db = Db::open(&DbConfig {
            url: "sqlite::memory:".into(),
            max_connections: 1,
        })
        .await?;
        let mut c = db.begin().await?;
        // Row `n` of caller `p`, stored by "another writer" (not through the map).
        let store = |x: &rusqlite::Connection, n: i64| {
            x.execute(
                "INSERT INTO idempotency (rowid, principal, request_id, rpc, payload_hash, \
                 response, created_at) VALUES (?1, 'p', 'r' || ?1, '/x', X'00', X'', 't')",
                [n],
            )
        };
        // The first `upto` rows merged into the index table.
        let merge = |x: &rusqlite::Connection, upto: i64| {
            x.execute(
                "INSERT OR IGNORE INTO idempotency_ix (principal, request_id, row) \
                 SELECT principal, request_id, rowid FROM idempotency WHERE rowid <= ?1",
                [upto],
            )?;
            x.execute(
                "UPDATE derived_index SET upto = ?1 WHERE name = 'idempotency'",
                [upto],
            )
        };
        let tail = std::sync::Mutex::new(RequestIdTail::default());
        let look = |x: &rusqlite::Connection| -> anyhow::Result<Vec<i64>> {
            let mut tail = super::lock(&tail)?;
            tail.refresh(x)?;
            let mut rows: Vec<i64> = tail.rows.values().copied().collect();
            rows.sort_unstable();
            Ok(rows)
        };
        let seen = c
            .with_sqlite(|x| {
                let mut seen = Vec::new();
                for n in 1..=3 {
                    store(x, n)?;
                }
                seen.push(look(x)?);
                store(x, 4)?;
                seen.push(look(x)?);
                merge(x, 2)?;
                seen.push(look(x)?);
                // Merged past all the map knows (rows 5 and 6 never read into it).
                store(x, 5)?;
                store(x, 6)?;
                merge(x, 6)?;
                store(x, 7)?;
                seen.push(look(x)?);
                // The merged mark went back (a restored database): the whole tail read again.
                x.execute(
                    "UPDATE derived_index SET upto = 3 WHERE name = 'idempotency'",
                    [],
                )?;
                seen.push(look(x)?);
                Ok(seen)
            })
            .await?;
        assert_eq!(
            seen,
            Some(vec![
                vec![1, 2, 3],
                vec![1, 2, 3, 4],
                vec![3, 4],
                vec![7],
                vec![4, 5, 6, 7]
            ])
        );
        // Found: row 2 from the index table, row 5 from the map (both hold it), row 7 from the
        // map alone; an id nobody stored is not.
        let keys: Vec<(String, String)> = ["r2", "r5", "r7", "r9"]
            .iter()
            .map(|r| ("p".to_owned(), (*r).to_owned()))
            .collect();
        let found = find_many(&mut c, &keys, Some(&tail)).await?;
        let found: Vec<&str> = found.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(found, ["r2", "r5", "r7"]);
        c.rollback().await?;
        Ok(())
    }
}
