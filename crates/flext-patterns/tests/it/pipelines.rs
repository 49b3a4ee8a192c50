//! Pipeline: typed stages, limits, failures and panics at stage i, metrics.

use flext_constants::ErrorCode;
use flext_patterns::Pipeline;
use flext_types::FlextError;
use serde_json::{Value, json};

#[tokio::test]
async fn stages_run_in_order_and_may_change_the_type() {
    let pipeline = Pipeline::<Value>::new("orders")
        .add_named_stage("extract", |v: Value| {
            v["items"]
                .as_array()
                .map(Vec::len)
                .ok_or_else(|| FlextError::validation("items must be a list"))
        })
        .unwrap()
        .add_async_stage(
            "price",
            |count: usize| async move { Ok(count as f64 * 2.5) },
        )
        .unwrap()
        .add_stage(|total: f64| Ok(json!({"total": total})))
        .unwrap();
    assert_eq!(pipeline.stage_count(), 3);
    assert_eq!(
        pipeline.process(json!({"items": [1, 2, 3]})).await.unwrap(),
        json!({"total": 7.5})
    );
}

#[tokio::test]
async fn an_empty_pipeline_returns_its_input() {
    let pipeline = Pipeline::<Value>::new("noop");
    assert_eq!(
        pipeline.process(json!({"a": 1})).await.unwrap(),
        json!({"a": 1})
    );
    assert_eq!(pipeline.metrics().executions, 1);
}

#[tokio::test]
async fn the_21st_stage_is_a_business_rule_violation() {
    let mut pipeline = Pipeline::<u32>::new("long");
    for _ in 0..20 {
        pipeline = pipeline.add_stage(|n: u32| Ok(n + 1)).unwrap();
    }
    let err = pipeline.add_stage(|n: u32| Ok(n + 1)).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BusinessRuleViolation);
    assert_eq!(err.to_string(), "Pipeline exceeds maximum stages limit: 20");
}

#[tokio::test]
async fn a_failing_stage_is_named_by_position_and_keeps_its_code() {
    let pipeline = Pipeline::<i32>::new("checks")
        .add_stage(|n: i32| Ok(n * 2))
        .unwrap()
        .add_named_stage("positive", |n: i32| {
            if n > 0 {
                Ok(n)
            } else {
                Err(FlextError::validation(format!("{n} is not positive")))
            }
        })
        .unwrap()
        .add_stage(|n: i32| Ok(n.to_string()))
        .unwrap();
    assert_eq!(pipeline.process(2).await.unwrap(), "4");
    let err = pipeline.process(-3).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ValidationError);
    assert_eq!(
        err.to_string(),
        "Pipeline failed at stage 2: -6 is not positive"
    );
    assert_eq!(err.data().unwrap()["stage_name"], "positive");
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "-6 is not positive"
    );
    let m = pipeline.metrics();
    assert_eq!((m.executions, m.successful, m.stage_count), (2, 1, 3));
    let runs: Vec<_> = m
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.executions, s.failures))
        .collect();
    assert_eq!(
        runs,
        [("stage 1", 2, 0), ("positive", 2, 1), ("stage 3", 1, 0)]
    );
}

#[tokio::test]
async fn a_panicking_stage_is_caught_and_reported_the_same_way() {
    let pipeline = Pipeline::<Vec<u8>>::new("bytes")
        .add_stage(|bytes: Vec<u8>| Ok(bytes.len()))
        .unwrap()
        .add_async_stage("divide", |len: usize| async move {
            if len == 0 {
                panic!("nothing to divide");
            }
            Ok(100 / len)
        })
        .unwrap();
    let err = pipeline.process(Vec::new()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::OperationError);
    assert_eq!(
        err.to_string(),
        "Pipeline failed at stage 2: Handler execution failed: nothing to divide"
    );
    assert_eq!(pipeline.process(vec![1, 2, 3, 4]).await.unwrap(), 25);
    let sync_panic = Pipeline::<u8>::new("sync")
        .add_stage(|_: u8| -> flext_types::FlextResult<u8> { panic!("sync boom") })
        .unwrap();
    assert_eq!(
        sync_panic.process(1).await.unwrap_err().to_string(),
        "Pipeline failed at stage 1: Handler execution failed: sync boom"
    );
}
