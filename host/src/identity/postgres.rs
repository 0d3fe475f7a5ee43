//! The PostgreSQL identities: tables in the ledger's database, shared by a fleet, on the ledger's
//! connection pool (same URL, timeouts and outage behaviour: [`IdentityError::Unavailable`]
//! within seconds, working again once the server is back).
//!
//! # Schema
//!
//! Created at start with `IF NOT EXISTS`, in one transaction under an advisory lock of its own,
//! so hosts starting together neither race nor see half of it:
//!
//! - `identities(app_id, app_user_id, act_id)`, primary key `(app_id, app_user_id)`: one row per
//!   user binding; re-pointing updates it.
//! - `identity_phones(phone_hash, act_id)`, primary key `phone_hash` (HMAC-SHA256, never the
//!   number), with an index on `act_id`: one row per phone number, never re-pointed.
//! - the sequence `identity_act_ids`, from [`IDENTITY_ACT_ID_BASE`]: fresh act_ids. A sequence
//!   never hands a number out twice, rolled-back transactions included (a gap is harmless).
//!
//! # Concurrency
//!
//! A bind is one READ COMMITTED transaction that inserts with `ON CONFLICT DO NOTHING`: of two
//! hosts inserting the same phone number (or the same user) at once, the second waits for the
//! first to commit, inserts nothing, and then reads the first one's row. So two hosts binding the
//! same phone at once end with one act_id. A user insert that finds the user bound by another
//! host meanwhile starts the transaction over, and sees the binding. Re-pointing is one `UPDATE
//! … WHERE act_id = from`, a compare-and-set.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Object, Pool};
use tokio_postgres::error::SqlState;

use super::{Bound, IDENTITY_ACT_ID_BASE, IdentityError, PhoneHash};
use crate::ledger::PostgresLedger;

/// How long one operation may take, from asking for a connection to the last answer (as the
/// ledger's operations).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Creating the schema, waiting for another host's included.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries of a transaction that meets a unique violation, a serialization failure, a deadlock,
/// or a user bound by another host between its statements.
const TRANSACTION_ATTEMPTS: u32 = 5;
/// The advisory lock the schema creation holds ("identity" in ASCII).
const SCHEMA_LOCK: i64 = 0x6964_656e_7469_7479;

/// Opens every bind transaction; the server-side timeouts end the transaction of a host that
/// vanished, its row locks with it.
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED; \
    SET LOCAL statement_timeout = '10s'; \
    SET LOCAL idle_in_transaction_session_timeout = '10s'";

const SELECT_USER: &str = "SELECT act_id FROM identities WHERE app_id = $1 AND app_user_id = $2";
const INSERT_USER: &str = "INSERT INTO identities (app_id, app_user_id, act_id) VALUES ($1, $2, $3) \
    ON CONFLICT (app_id, app_user_id) DO NOTHING";
const REPOINT_USER: &str = "UPDATE identities SET act_id = $4 WHERE app_id = $1 AND app_user_id = $2 AND act_id = $3";
const SELECT_PHONE: &str = "SELECT act_id FROM identity_phones WHERE phone_hash = $1";
const INSERT_PHONE: &str = "INSERT INTO identity_phones (phone_hash, act_id) VALUES ($1, $2) \
    ON CONFLICT (phone_hash) DO NOTHING RETURNING act_id";
const HAS_PHONE: &str = "SELECT EXISTS (SELECT 1 FROM identity_phones WHERE act_id = $1)";
const NEXT_ACT_ID: &str = "SELECT nextval('identity_act_ids')";

fn schema() -> String {
    format!(
        "BEGIN;
        SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
        CREATE TABLE IF NOT EXISTS identities (
            app_id bigint NOT NULL,
            app_user_id text COLLATE \"C\" NOT NULL,
            act_id bigint NOT NULL,
            PRIMARY KEY (app_id, app_user_id));
        CREATE TABLE IF NOT EXISTS identity_phones (
            phone_hash bytea PRIMARY KEY CHECK (octet_length(phone_hash) = 32),
            act_id bigint NOT NULL);
        CREATE INDEX IF NOT EXISTS identity_phones_act_id ON identity_phones (act_id);
        CREATE SEQUENCE IF NOT EXISTS identity_act_ids AS bigint
            START WITH {IDENTITY_ACT_ID_BASE} MINVALUE {IDENTITY_ACT_ID_BASE};
        COMMIT;"
    )
}

/// A handle on the PostgreSQL identities; clones share the ledger's pool.
#[derive(Clone)]
pub struct PostgresIdentities {
    pool: Pool,
}

/// How an attempt failed.
enum Failure {
    Database(tokio_postgres::Error),
    /// Another host changed what the attempt read; try again.
    Retry(&'static str),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Failure {
        Failure::Database(error)
    }
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Retry(_) => true,
            Failure::Database(error) => matches!(
                error.code(),
                Some(
                    &SqlState::UNIQUE_VIOLATION
                        | &SqlState::T_R_SERIALIZATION_FAILURE
                        | &SqlState::T_R_DEADLOCK_DETECTED
                )
            ),
        }
    }

    fn into_identity_error(self) -> IdentityError {
        match self {
            Failure::Retry(why) => IdentityError::Unavailable(format!("{why}, {TRANSACTION_ATTEMPTS} times; retry")),
            Failure::Database(error) => IdentityError::Unavailable(match error.as_db_error() {
                Some(db) => format!("PostgreSQL: {}", db.message()),
                None => format!("PostgreSQL: {error}"),
            }),
        }
    }
}

/// One attempt's work on a connection.
type Attempt<'c, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'c>>;

/// A pooled connection that goes back to the pool only when its operation succeeded; otherwise
/// it is closed, which makes the server roll back whatever it had begun.
struct Connection {
    object: Option<Object>,
    reusable: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.reusable
            && let Some(object) = self.object.take()
        {
            drop(Object::take(object));
        }
    }
}

impl PostgresIdentities {
    /// Uses the ledger's database and pool, creating the identity tables if missing.
    pub async fn open(ledger: &PostgresLedger) -> Result<PostgresIdentities, IdentityError> {
        let identities = PostgresIdentities { pool: ledger.pool().clone() };
        let schema = schema();
        identities
            .run(SCHEMA_TIMEOUT, |client| {
                let schema = schema.clone();
                Box::pin(async move { Ok(client.batch_execute(&schema).await?) })
            })
            .await?;
        Ok(identities)
    }

    /// Runs `attempt` on a pooled connection within `limit`, again on a fresh connection when it
    /// fails in a way another try can fix.
    async fn run<T>(
        &self,
        limit: Duration,
        mut attempt: impl for<'c> FnMut(&'c ClientWrapper) -> Attempt<'c, T>,
    ) -> Result<T, IdentityError> {
        let work = async {
            let mut tries = 0;
            loop {
                tries += 1;
                let object = self
                    .pool
                    .get()
                    .await
                    .map_err(|error| IdentityError::Unavailable(format!("no PostgreSQL connection: {error}")))?;
                let mut connection = Connection { object: Some(object), reusable: false };
                let client: &ClientWrapper = connection.object.as_deref().expect("held until dropped");
                match attempt(client).await {
                    Ok(answer) => {
                        connection.reusable = true;
                        return Ok(answer);
                    }
                    Err(failure) if failure.retryable() && tries < TRANSACTION_ATTEMPTS => continue,
                    Err(failure) => return Err(failure.into_identity_error()),
                }
            }
        };
        match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(IdentityError::Unavailable(format!("PostgreSQL did not answer within {limit:?}"))),
        }
    }

    /// The act_id of (app, app_user_id), if bound.
    pub async fn lookup(&self, app_id: i64, app_user_id: &str) -> Result<Option<i64>, IdentityError> {
        self.run(OPERATION_TIMEOUT, |client| {
            let app_user_id = app_user_id.to_owned();
            Box::pin(async move {
                let statement = client.prepare_cached(SELECT_USER).await?;
                let row = client.query_opt(&statement, &[&app_id, &app_user_id]).await?;
                Ok(row.map(|row| row.try_get(0)).transpose()?)
            })
        })
        .await
    }

    /// Whether any phone number is bound to `act_id`.
    pub async fn has_phone(&self, act_id: i64) -> Result<bool, IdentityError> {
        self.run(OPERATION_TIMEOUT, |client| {
            Box::pin(async move {
                let statement = client.prepare_cached(HAS_PHONE).await?;
                Ok(client.query_one(&statement, &[&act_id]).await?.try_get(0)?)
            })
        })
        .await
    }

    /// See [`super::IdentityStorage::bind`].
    pub async fn bind(
        &self,
        app_id: i64,
        app_user_id: &str,
        phone: Option<&PhoneHash>,
    ) -> Result<Bound, IdentityError> {
        let phone = phone.copied();
        self.run(OPERATION_TIMEOUT, |client| {
            let app_user_id = app_user_id.to_owned();
            Box::pin(async move { bind_attempt(client, app_id, &app_user_id, phone.as_ref()).await })
        })
        .await
    }

    /// See [`super::IdentityStorage::repoint`].
    pub async fn repoint(&self, app_id: i64, app_user_id: &str, from: i64, to: i64) -> Result<bool, IdentityError> {
        self.run(OPERATION_TIMEOUT, |client| {
            let app_user_id = app_user_id.to_owned();
            Box::pin(async move {
                let statement = client.prepare_cached(REPOINT_USER).await?;
                Ok(client.execute(&statement, &[&app_id, &app_user_id, &from, &to]).await? == 1)
            })
        })
        .await
    }
}

/// One try at a bind, in one transaction (see the module docs).
async fn bind_attempt(
    client: &ClientWrapper,
    app_id: i64,
    app_user_id: &str,
    phone: Option<&PhoneHash>,
) -> Result<Bound, Failure> {
    client.batch_execute(BEGIN).await?;
    let existing = client.query_opt(SELECT_USER, &[&app_id, &app_user_id]).await?;
    let bound = match existing {
        Some(row) => {
            let act_id: i64 = row.try_get(0)?;
            let phone_act_id = match phone {
                Some(phone) => Some(claim_phone(client, phone, act_id).await?),
                None => None,
            };
            Bound { act_id, created: false, phone_act_id }
        }
        None => {
            let owner = match phone {
                Some(phone) => client.query_opt(SELECT_PHONE, &[&phone.0.as_slice()]).await?,
                None => None,
            };
            let act_id = match (owner, phone) {
                (Some(row), _) => row.try_get(0)?,
                (None, Some(phone)) => {
                    let fresh = next_act_id(client).await?;
                    claim_phone(client, phone, fresh).await?
                }
                (None, None) => next_act_id(client).await?,
            };
            if client.execute(INSERT_USER, &[&app_id, &app_user_id, &act_id]).await? == 0 {
                return Err(Failure::Retry("the user was bound by another host meanwhile"));
            }
            Bound { act_id, created: true, phone_act_id: phone.map(|_| act_id) }
        }
    };
    client.batch_execute("COMMIT").await?;
    Ok(bound)
}

/// Binds the phone to `act_id` unless it is bound; returns the act_id it is bound to now. A
/// host inserting the same phone at once makes this wait for its commit, then read its row.
async fn claim_phone(client: &ClientWrapper, phone: &PhoneHash, act_id: i64) -> Result<i64, Failure> {
    let hash = phone.0.as_slice();
    if let Some(row) = client.query_opt(INSERT_PHONE, &[&hash, &act_id]).await? {
        return Ok(row.try_get(0)?);
    }
    match client.query_opt(SELECT_PHONE, &[&hash]).await? {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(Failure::Retry("the phone number's binding vanished")),
    }
}

async fn next_act_id(client: &ClientWrapper) -> Result<i64, Failure> {
    Ok(client.query_one(NEXT_ACT_ID, &[]).await?.try_get(0)?)
}

#[cfg(test)]
mod tests {
    //! These tests need a PostgreSQL server: `DATABASE_URL`, or trust auth on 127.0.0.1:5432.

    use super::*;

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    /// A fresh database's URL.
    async fn fresh_database() -> String {
        let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| panic!("no PostgreSQL at `{url}` (set DATABASE_URL): {error}"));
        tokio::spawn(connection);
        let name = format!("hbidtest_{}_{}", std::process::id(), fastrand::u32(..));
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        format!("{base}/{name}")
    }

    // Proves two hosts (two pools) binding new users with one phone number at once, many times
    // over, always end with one act_id per phone, and that both start on one schema.
    #[tokio::test]
    async fn two_hosts_binding_one_phone_at_once_agree() {
        let url = fresh_database().await;
        let (one, two) = tokio::join!(PostgresLedger::connect(&url), PostgresLedger::connect(&url));
        let (one, two) = (one.unwrap(), two.unwrap());
        let (one, two) = tokio::join!(PostgresIdentities::open(&one), PostgresIdentities::open(&two));
        let (one, two) = (one.unwrap(), two.unwrap());
        for round in 0..40_u8 {
            let phone = PhoneHash([round; 32]);
            let (user_a, user_b) = (format!("a{round}"), format!("b{round}"));
            let (a, b) = tokio::join!(one.bind(1128, &user_a, Some(&phone)), two.bind(2329, &user_b, Some(&phone)));
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.act_id, b.act_id, "round {round}");
            assert!(a.act_id >= IDENTITY_ACT_ID_BASE);
            assert_eq!((a.phone_act_id, b.phone_act_id), (Some(a.act_id), Some(a.act_id)));
        }
        let (a, b) = tokio::join!(one.bind(9, "same", None), two.bind(9, "same", None));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.act_id, b.act_id);
        assert!(a.created != b.created, "one of them bound the user");
        assert!(one.repoint(9, "same", a.act_id, 5).await.unwrap());
        assert_eq!(two.lookup(9, "same").await.unwrap(), Some(5));
        assert!(!two.repoint(9, "same", a.act_id, 6).await.unwrap());
    }
}
