//! Aggregates that call services: async decisions with the aggregate's services and id,
//! decided again on the fresh state after a conflict; loads that tell whether the
//! aggregate exists.

use std::sync::Arc;
use std::sync::Mutex;

use async_trait::async_trait;
use flext_constants::ErrorCode;
use flext_cqrs::{InMemoryEventStore, Repository};
use flext_protocols::{Aggregate, Event, ServicedAggregate};
use flext_types::{FlextError, FlextResult};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened(u64),
    Withdrawn(u64),
}

impl Event for AccountEvent {
    fn event_name(&self) -> &str {
        match self {
            Self::Opened(_) => "Opened",
            Self::Withdrawn(_) => "Withdrawn",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum AccountCommand {
    Open(u64),
    Withdraw(u64),
    Explode,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Account {
    balance: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn handle(&self, command: AccountCommand) -> FlextResult<Vec<AccountEvent>> {
        match command {
            AccountCommand::Open(amount) => Ok(vec![AccountEvent::Opened(amount)]),
            _ => Err(FlextError::operation("use execute_serviced")),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened(amount) => self.balance = *amount,
            AccountEvent::Withdrawn(amount) => self.balance -= amount,
        }
    }
}

/// A fraud check that records who it was asked about, refuses amounts over its limit,
/// and can hold its first callers until a number of them arrived.
struct Fraud {
    limit: u64,
    asked: Mutex<Vec<(String, u64, u64)>>,
    gate: Option<Barrier>,
    gated: Mutex<usize>,
}

impl Fraud {
    fn new(limit: u64, gate_first: usize) -> Self {
        Self {
            limit,
            asked: Mutex::new(Vec::new()),
            gate: (gate_first > 0).then(|| Barrier::new(gate_first)),
            gated: Mutex::new(gate_first),
        }
    }

    async fn allows(&self, account: &str, balance: u64, amount: u64) -> FlextResult<bool> {
        self.asked
            .lock()
            .expect("a lock")
            .push((account.to_owned(), balance, amount));
        let wait = {
            let mut left = self.gated.lock().expect("a lock");
            let wait = *left > 0;
            *left = left.saturating_sub(1);
            wait
        };
        if let (true, Some(gate)) = (wait, &self.gate) {
            gate.wait().await;
        }
        Ok(amount <= self.limit)
    }
}

#[async_trait]
impl ServicedAggregate for Account {
    type Services = Fraud;

    async fn decide(
        &self,
        id: &str,
        command: AccountCommand,
        fraud: &Fraud,
    ) -> FlextResult<Vec<AccountEvent>> {
        match command {
            AccountCommand::Open(amount) => Ok(vec![AccountEvent::Opened(amount)]),
            AccountCommand::Withdraw(amount) => {
                if amount > self.balance {
                    return Err(FlextError::business_rule(format!(
                        "Insufficient funds in {id}"
                    )));
                }
                if !fraud.allows(id, self.balance, amount).await? {
                    return Err(FlextError::authorization_denied("Held for fraud review"));
                }
                Ok(vec![AccountEvent::Withdrawn(amount)])
            }
            AccountCommand::Explode => panic!("the decision blew up"),
        }
    }
}

fn repository() -> Arc<Repository<Account>> {
    Arc::new(Repository::new(Arc::new(InMemoryEventStore::new())))
}

#[tokio::test]
async fn a_decision_calls_its_services_with_the_aggregates_id() -> FlextResult<()> {
    let repo = repository();
    let fraud = Fraud::new(500, 0);
    assert!(!repo.load("acc-1").await?.exists(), "never created");
    repo.execute("acc-1", AccountCommand::Open(1_000)).await?;
    assert!(repo.load("acc-1").await?.exists());

    let done = repo
        .execute_serviced("acc-1", AccountCommand::Withdraw(200), &fraud)
        .await?;
    assert_eq!(done.events, [AccountEvent::Withdrawn(200)]);
    assert_eq!(done.state.balance, 800);
    let held = repo
        .execute_serviced("acc-1", AccountCommand::Withdraw(600), &fraud)
        .await
        .unwrap_err();
    assert_eq!(held.code(), ErrorCode::AuthorizationDenied);
    assert_eq!(
        *fraud.asked.lock().expect("a lock"),
        [
            ("acc-1".to_owned(), 1_000, 200),
            ("acc-1".to_owned(), 800, 600)
        ]
    );
    let broke = repo
        .execute_serviced("acc-1", AccountCommand::Withdraw(5_000), &fraud)
        .await
        .unwrap_err();
    assert_eq!(broke.message(), "Insufficient funds in acc-1");
    assert_eq!(
        repo.load("acc-1").await?.state.balance,
        800,
        "nothing stored on a rejection"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_runs_the_whole_decision_again_on_the_fresh_state() -> FlextResult<()> {
    let repo = repository();
    repo.execute("acc-2", AccountCommand::Open(100)).await?;
    // Both withdrawals pass the check on the balance of 100, then race to append.
    let fraud = Arc::new(Fraud::new(1_000, 2));
    let withdraw = |repo: Arc<Repository<Account>>, fraud: Arc<Fraud>| async move {
        repo.execute_serviced("acc-2", AccountCommand::Withdraw(70), &fraud)
            .await
    };
    let (a, b) = tokio::join!(
        tokio::spawn(withdraw(repo.clone(), fraud.clone())),
        tokio::spawn(withdraw(repo.clone(), fraud.clone()))
    );
    let results = [a.expect("a task"), b.expect("a task")];
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let lost = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("one lost");
    // The loser decided again on the balance the winner left: the funds are gone.
    assert_eq!(lost.code(), ErrorCode::BusinessRuleViolation, "{lost}");
    assert_eq!(repo.load("acc-2").await?.state.balance, 30);
    let asked = fraud.asked.lock().expect("a lock").clone();
    assert_eq!(
        asked.len(),
        2,
        "the retry decided on the fresh state before asking: {asked:?}"
    );
    assert!(asked.iter().all(|(_, balance, _)| *balance == 100));
    Ok(())
}

#[tokio::test]
async fn a_panicking_decision_is_an_operation_error_and_stores_nothing() -> FlextResult<()> {
    let repo = repository();
    let fraud = Fraud::new(10, 0);
    repo.execute("acc-3", AccountCommand::Open(5)).await?;
    let error = repo
        .execute_serviced("acc-3", AccountCommand::Explode, &fraud)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::OperationError);
    assert!(error.message().contains("the decision blew up"), "{error}");
    assert_eq!(repo.load("acc-3").await?.version, 1);
    Ok(())
}
