//! Many tasks on one handler: exact counts, lock-free recording.

use std::sync::Arc;

use flext_constants::HandlerState;
use flext_impl::{BasicHandler, ManagedHandler};
use flext_protocols::Handler;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_tasks_times_two_hundred_calls_count_exactly() {
    let handler = Arc::new(BasicHandler::from_fn("shared", |n: u64| async move {
        tokio::task::yield_now().await;
        Ok(n + 1)
    }));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let handler = handler.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    assert_eq!(handler.handle(t * 1000 + i).await, Ok(t * 1000 + i + 1));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let m = handler.metrics();
    assert_eq!(m.requests_processed, 1600);
    assert_eq!(m.successful_requests, 1600);
    assert_eq!(m.failed_requests, 0);
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.latency.count, 1600);
    assert_eq!(handler.state(), HandlerState::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_outcomes_under_concurrency_add_up() {
    let handler = Arc::new(BasicHandler::from_fn("mixed", |n: u64| async move {
        if n.is_multiple_of(3) {
            Err(flext_types::FlextError::validation("multiple of three"))
        } else if n.is_multiple_of(7) {
            panic!("seven");
        } else {
            Ok(n)
        }
    }));
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let handler = handler.clone();
            tokio::spawn(async move {
                for i in 0..210u64 {
                    let _ = handler.handle(t * 210 + i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let total = 8 * 210u64;
    let failures = (0..total)
        .filter(|n| n.is_multiple_of(3) || n.is_multiple_of(7))
        .count() as u64;
    let m = handler.metrics();
    assert_eq!(m.requests_processed, total);
    assert_eq!(m.failed_requests, failures);
    assert_eq!(m.successful_requests, total - failures);
}
