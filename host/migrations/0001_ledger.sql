-- The double-entry books of the PostgreSQL ledger (host/src/ledger/postgres.rs explains the
-- design). Every text key is COLLATE "C": ids and account names compare byte by byte, as Rust
-- strings do, so pages and ranges line up exactly with the embedded ledger's.

-- One row per account that money has ever moved through.
CREATE TABLE accounts (
    name    text COLLATE "C" PRIMARY KEY,
    balance bigint NOT NULL,
    -- The code never takes a guarded account below zero; this is the last line of defence.
    -- Only the company's funding accounts may be negative.
    CONSTRAINT accounts_only_funding_below_zero CHECK (balance >= 0 OR name LIKE 'funding/%')
);

-- One row per entry. The primary key is the idempotency key: `rp/{activity}/{order_no}`,
-- `wd/{act_id}/{request_id}` or `fund/{activity}/{total}`.
CREATE TABLE entries (
    id             text COLLATE "C" PRIMARY KEY,
    kind           smallint NOT NULL CHECK (kind IN (1, 2, 3)),
    debit_account  text COLLATE "C" NOT NULL,
    credit_account text COLLATE "C" NOT NULL,
    amount_cents   bigint NOT NULL CHECK (amount_cents > 0),
    time_ms        bigint NOT NULL CHECK (time_ms >= 0),
    act_id         bigint NOT NULL,
    memo           text NOT NULL,
    activity_id    text COLLATE "C" NOT NULL,
    scene_id       text NOT NULL,
    reference      text NOT NULL,
    token          text NOT NULL,
    CONSTRAINT entries_two_accounts CHECK (debit_account <> credit_account)
);

-- The wallet flow: a user's red packets and withdrawals (funding entries belong to no user),
-- read newest first by (time_ms, id).
CREATE INDEX entries_wallet_flow ON entries (act_id, time_ms, id) WHERE kind <> 3;

-- Cents of red packets ever credited to each user, kept with the entries that make them.
CREATE TABLE user_income (
    act_id bigint PRIMARY KEY,
    cents  bigint NOT NULL CHECK (cents >= 0)
);

-- The total each activity has been funded to; funding tops up to a total, idempotently.
CREATE TABLE funded (
    activity_id text COLLATE "C" PRIMARY KEY,
    cents       bigint NOT NULL CHECK (cents >= 0)
);
