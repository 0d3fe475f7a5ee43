//! The PostgreSQL ledger (being written; see docs/backends.md).

use super::{Credit, CreditResult, LedgerEntry, LedgerError, LedgerWallet, Withdrawal, WithdrawalRequest};
use crate::store::FlowPosition;

/// A handle on the PostgreSQL ledger; clones share one connection pool.
#[derive(Clone)]
pub struct PostgresLedger {
    _private: (),
}

#[allow(missing_docs, clippy::unused_async, unused_variables)]
impl PostgresLedger {
    pub async fn connect(url: &str) -> Result<PostgresLedger, LedgerError> {
        Err(LedgerError::Unavailable("the PostgreSQL ledger is not built yet".into()))
    }
    pub async fn fund_activity(&self, activity_id: String, budget_cents: i64, time_ms: u64) -> Result<(), LedgerError> {
        unreachable!()
    }
    pub async fn credit_batch(&self, credits: Vec<Credit>) -> Result<Vec<CreditResult>, LedgerError> {
        unreachable!()
    }
    pub async fn withdraw(&self, request: WithdrawalRequest) -> Result<Withdrawal, LedgerError> {
        unreachable!()
    }
    pub async fn wallet(&self, act_id: i64, flow_ids: &[String]) -> Result<LedgerWallet, LedgerError> {
        unreachable!()
    }
    pub async fn user_entries(
        &self,
        act_id: i64,
        before: Option<&FlowPosition>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        unreachable!()
    }
    pub async fn entry(&self, id: &str) -> Result<Option<LedgerEntry>, LedgerError> {
        unreachable!()
    }
    pub async fn balance(&self, account: &str) -> Result<i64, LedgerError> {
        unreachable!()
    }
    pub async fn red_packets_of(&self, activity_id: &str) -> Result<Vec<LedgerEntry>, LedgerError> {
        unreachable!()
    }
    pub async fn all_entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        unreachable!()
    }
    pub async fn all_balances(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        unreachable!()
    }
}
