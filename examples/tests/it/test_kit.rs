//! The test kit reached through the facade's `testing` feature, as a user's tests reach
//! it: the bank account of `nats_bank` under given/when/then.

use flext_examples::nats_bank::{Account, AccountCommand, AccountEvent};
use flext_handlers::Constants::ErrorCode;
use flext_handlers::testing::AggregateFixture;

#[test]
fn a_withdrawal_within_the_balance_is_withdrawn() {
    let account = AggregateFixture::<Account>::given(vec![AccountEvent::Deposited { amount: 500 }])
        .when(AccountCommand::Withdraw(200))
        .then_expect_events(vec![AccountEvent::Withdrawn { amount: 200 }]);
    assert_eq!(account.balance, 300);
}

#[test]
fn a_withdrawal_past_the_balance_is_refused() {
    AggregateFixture::<Account>::given_no_previous_events()
        .when(AccountCommand::Withdraw(1))
        .then_expect_error(
            ErrorCode::BusinessRuleViolation,
            "Insufficient funds: the balance is 0, the withdrawal 1",
        );
}
