-- The ledger across several PostgreSQL databases (host/src/ledger/sharded.rs explains the design).

-- Each database's place in the shard list, recorded at its first start: a later start that lists
-- the databases in another order, or another number of them, is refused, because the list decides
-- on which database every user's money lives. A deployment of one database is shard 0 of 1.
CREATE TABLE ledger_shard (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    shard_index integer NOT NULL CHECK (shard_index >= 0),
    shard_count integer NOT NULL CHECK (shard_count > shard_index)
);

-- Budget lent between shards passes through `transit/{from}>{to}`: the lender's copy holds every
-- cent lent, the borrower's copy every cent arrived, below zero, so the two sum to what is still on
-- its way (zero once every loan has arrived). Like funding, a transit account may be negative.
ALTER TABLE accounts DROP CONSTRAINT accounts_only_funding_below_zero;
ALTER TABLE accounts ADD CONSTRAINT accounts_only_funding_below_zero
    CHECK (balance >= 0 OR name LIKE 'funding/%' OR name LIKE 'transit/%');
