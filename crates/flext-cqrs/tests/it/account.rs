//! A bank account aggregate for the event-sourcing tests.

use flext_protocols::{Aggregate, Event};
use flext_types::{FlextError, FlextResult};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl Event for AccountEvent {
    fn event_name(&self) -> &str {
        match self {
            AccountEvent::Opened { .. } => "AccountOpened",
            AccountEvent::Deposited { .. } => "MoneyDeposited",
            AccountEvent::Withdrawn { .. } => "MoneyWithdrawn",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AccountCommand {
    Open {
        owner: String,
    },
    Deposit(u64),
    Withdraw(u64),
    /// Decides nothing.
    Touch,
    /// Its handler panics.
    Explode,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Account {
    pub(crate) owner: Option<String>,
    pub(crate) balance: u64,
    pub(crate) movements: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;

    fn handle(&self, command: AccountCommand) -> FlextResult<Vec<AccountEvent>> {
        match command {
            AccountCommand::Open { owner } => {
                if self.owner.is_some() {
                    return Err(FlextError::business_rule("Account is already open"));
                }
                Ok(vec![AccountEvent::Opened { owner }])
            }
            _ if self.owner.is_none() => Err(FlextError::business_rule("Account is not open")),
            AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            AccountCommand::Withdraw(amount) if amount > self.balance => {
                Err(FlextError::business_rule(format!(
                    "Insufficient funds: balance {}, requested {amount}",
                    self.balance
                )))
            }
            AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
            AccountCommand::Touch => Ok(vec![]),
            AccountCommand::Explode => panic!("ledger corrupted"),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
        self.movements += 1;
    }
}

mod fixture {
    use flext_constants::ErrorCode;
    use flext_testing::AggregateFixture;

    use super::*;

    #[test]
    fn opening_twice_is_rejected() {
        AggregateFixture::<Account>::given(vec![AccountEvent::Opened {
            owner: "Ada".into(),
        }])
        .when(AccountCommand::Open {
            owner: "Bob".into(),
        })
        .then_expect_error(ErrorCode::BusinessRuleViolation, "Account is already open");
    }

    #[test]
    fn withdrawals_need_funds() {
        let opened = AccountEvent::Opened {
            owner: "Ada".into(),
        };
        AggregateFixture::<Account>::given(vec![
            opened.clone(),
            AccountEvent::Deposited { amount: 10 },
        ])
        .when(AccountCommand::Withdraw(20))
        .then_expect_error(
            ErrorCode::BusinessRuleViolation,
            "Insufficient funds: balance 10, requested 20",
        );
        let state = AggregateFixture::<Account>::given(vec![
            opened,
            AccountEvent::Deposited { amount: 10 },
        ])
        .when(AccountCommand::Withdraw(4))
        .then_expect_events(vec![AccountEvent::Withdrawn { amount: 4 }]);
        assert_eq!(state.balance, 6);
    }

    #[test]
    fn a_new_account_accepts_only_opening() {
        AggregateFixture::<Account>::given_no_previous_events()
            .when(AccountCommand::Deposit(5))
            .then_expect_error(ErrorCode::BusinessRuleViolation, "Account is not open");
    }
}
