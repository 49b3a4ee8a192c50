//! `HeadSignal`: the head only moves forward, wakes waiters at once, and polls otherwise.

use std::time::Duration;

use flext_store::HeadSignal;

#[test]
fn the_head_only_moves_forward() {
    let head = HeadSignal::new(5);
    let shared = head.clone();
    shared.advance(9);
    head.advance(7); // a late report of an earlier commit
    assert_eq!(head.get(), 9);
    assert_eq!(shared.get(), 9);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_wakes_when_the_head_reaches_its_position_not_before() {
    let head = HeadSignal::new(1);
    let poll = Duration::from_secs(3600);
    let waiter = tokio::spawn(head.wait_for(3, poll));
    tokio::task::yield_now().await;
    head.advance(2);
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "position 2 is not 3");
    head.advance(3);
    tokio::time::timeout(Duration::from_millis(1), waiter)
        .await
        .expect("woken by the advance, long before the poll interval")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_waiter_with_no_news_returns_after_the_poll_interval() {
    let head = HeadSignal::new(1);
    let start = tokio::time::Instant::now();
    head.wait_for(2, Duration::from_millis(500)).await;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    // A position already reached returns at once.
    let start = tokio::time::Instant::now();
    head.wait_for(1, Duration::from_millis(500)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}
