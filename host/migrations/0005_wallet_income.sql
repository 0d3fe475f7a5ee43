-- A wallet's income beside its balance (host/src/ledger/postgres.rs): a credit then moves one
-- row per user (the wallet account's balance and income in one upsert) instead of two, the
-- account's and `user_income`'s. Income other hosts wrote into `user_income` before this
-- migration, or while a rolling upgrade runs, stays there: a wallet's income is the sum of the
-- two, so no row is copied and hosts of either version keep writing correctly. Only wallet
-- accounts ever have income.
ALTER TABLE accounts ADD COLUMN income bigint NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD CONSTRAINT accounts_income_not_below_zero CHECK (income >= 0);
