//! [`Pipeline`]: stages in order, each free to change the data's type.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use flext_constants::handler::MAX_PIPELINE_STAGES;
use flext_impl::{MetricsRecorder, Timer, catch_panic, catch_panic_sync};
use flext_protocols::{Handler, MetricsSource};
use flext_types::{
    FlextError, FlextResult, LatencySummary, MetricSet, MetricValue, short_type_name,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

type Data = Box<dyn Any + Send>;
type StageFuture = Pin<Box<dyn Future<Output = FlextResult<Data>> + Send>>;

enum Run {
    Sync(Box<dyn Fn(Data) -> FlextResult<Data> + Send + Sync>),
    Async(Box<dyn Fn(Data) -> StageFuture + Send + Sync>),
}

struct Stage {
    name: String,
    run: Run,
    recorder: MetricsRecorder,
}

/// Stages that process data in order (at most [`MAX_PIPELINE_STAGES`]), built with a typed
/// builder: `Pipeline<I, O>` takes an `I` and gives an `O`, and each stage added may change
/// the output type, so a pipeline can parse, enrich and render without a common data type.
///
/// - A failing stage stops the pipeline with "Pipeline failed at stage {i}: {error}"
///   (stages count from 1), keeping the stage's error code; its data names the pipeline,
///   stage number and stage name, and its source is the stage's own error.
/// - A panicking stage is caught and reported the same way (an `OPERATION_ERROR`).
/// - An empty pipeline returns its input.
///
/// A pipeline is itself a [`Handler`] of `I` returning `O`.
///
/// ```
/// use flext_patterns::Pipeline;
/// use flext_types::FlextError;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> flext_types::FlextResult<()> {
/// let pipeline = Pipeline::<String>::new("totals")
///     .add_stage(|raw: String| raw.trim().parse::<u32>().map_err(|e| FlextError::validation(e.to_string())))?
///     .add_stage(|n: u32| Ok(n * 2))?
///     .add_stage(|n: u32| Ok(format!("total: {n}")))?;
/// assert_eq!(pipeline.process(" 21 ".into()).await?, "total: 42");
/// let err = pipeline.process("x".into()).await.unwrap_err();
/// assert_eq!(err.to_string(), "Pipeline failed at stage 1: invalid digit found in string");
/// # Ok(())
/// # }
/// ```
pub struct Pipeline<I, O = I> {
    name: String,
    stages: Vec<Stage>,
    successes: AtomicU64,
    failures: AtomicU64,
    _types: PhantomData<fn(I) -> O>,
}

/// A pipeline's metrics: runs and each stage's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineMetrics {
    /// The pipeline's name.
    pub pipeline_name: String,
    /// Runs of the pipeline.
    pub executions: u64,
    /// Runs that went through every stage.
    pub successful: u64,
    /// How many stages it has.
    pub stage_count: usize,
    /// Each stage's metrics, in order.
    pub stages: Vec<StageMetrics>,
}

/// One stage's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageMetrics {
    /// The stage's name.
    pub name: String,
    /// Times it ran.
    pub executions: u64,
    /// Times it failed (or panicked).
    pub failures: u64,
    /// Its mean time per run.
    #[serde(
        with = "flext_types::serde_helpers::millis",
        rename = "average_time_ms"
    )]
    pub average_time: Duration,
    /// Its latency distribution.
    pub latency: LatencySummary,
}

impl<I: Send + 'static> Pipeline<I, I> {
    /// A pipeline with no stages: it returns its input.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            stages: Vec::new(),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            _types: PhantomData,
        }
    }
}

impl<I, O> Pipeline<I, O>
where
    I: Send + 'static,
    O: Send + 'static,
{
    /// Appends a synchronous stage named "stage {n}". The 21st stage is a
    /// `BUSINESS_RULE_VIOLATION` "Pipeline exceeds maximum stages limit: 20".
    pub fn add_stage<N, F>(self, stage: F) -> FlextResult<Pipeline<I, N>>
    where
        N: Send + 'static,
        F: Fn(O) -> FlextResult<N> + Send + Sync + 'static,
    {
        let name = format!("stage {}", self.stages.len() + 1);
        self.add_named_stage(name, stage)
    }

    /// Appends a synchronous stage with a name of its own.
    pub fn add_named_stage<N, F>(
        self,
        name: impl Into<String>,
        stage: F,
    ) -> FlextResult<Pipeline<I, N>>
    where
        N: Send + 'static,
        F: Fn(O) -> FlextResult<N> + Send + Sync + 'static,
    {
        self.push(
            name.into(),
            Run::Sync(Box::new(move |data| {
                Ok(Box::new(stage(take::<O>(data)?)?) as Data)
            })),
        )
    }

    /// Appends an async stage (an async closure or `async fn`) with a name of its own.
    pub fn add_async_stage<N, F, Fut>(
        self,
        name: impl Into<String>,
        stage: F,
    ) -> FlextResult<Pipeline<I, N>>
    where
        N: Send + 'static,
        F: Fn(O) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = FlextResult<N>> + Send + 'static,
    {
        let stage = Arc::new(stage);
        self.push(
            name.into(),
            Run::Async(Box::new(move |data| {
                let stage = stage.clone();
                Box::pin(async move { Ok(Box::new(stage(take::<O>(data)?).await?) as Data) })
            })),
        )
    }

    fn push<N>(mut self, name: String, run: Run) -> FlextResult<Pipeline<I, N>> {
        if self.stages.len() >= MAX_PIPELINE_STAGES {
            return Err(FlextError::business_rule(format!(
                "Pipeline exceeds maximum stages limit: {MAX_PIPELINE_STAGES}"
            )));
        }
        self.stages.push(Stage {
            name,
            run,
            recorder: MetricsRecorder::new(),
        });
        Ok(Pipeline {
            name: self.name,
            stages: self.stages,
            successes: self.successes,
            failures: self.failures,
            _types: PhantomData,
        })
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many stages it has.
    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }

    /// Runs `data` through every stage.
    pub async fn process(&self, data: I) -> FlextResult<O> {
        let result = self.run(data).await;
        let counter = if result.is_ok() {
            &self.successes
        } else {
            &self.failures
        };
        counter.fetch_add(1, Relaxed);
        result
    }

    async fn run(&self, data: I) -> FlextResult<O> {
        let mut data: Data = Box::new(data);
        for (index, stage) in self.stages.iter().enumerate() {
            let timer = Timer::start();
            let result = match &stage.run {
                Run::Sync(run) => catch_panic_sync(|| run(data)),
                Run::Async(run) => catch_panic(run(data)).await,
            };
            stage.recorder.record(timer.elapsed(), result.is_ok());
            data = result.map_err(|error| {
                FlextError::new(
                    error.code(),
                    format!(
                        "Pipeline failed at stage {}: {}",
                        index + 1,
                        error.message()
                    ),
                )
                .with_data(
                    json!({"pipeline": self.name, "stage": index + 1, "stage_name": stage.name}),
                )
                .with_source(error)
            })?;
        }
        take::<O>(data)
    }

    /// The pipeline's metrics: runs, successes and per stage.
    pub fn metrics(&self) -> PipelineMetrics {
        let successful = self.successes.load(Relaxed);
        PipelineMetrics {
            pipeline_name: self.name.clone(),
            executions: successful + self.failures.load(Relaxed),
            successful,
            stage_count: self.stages.len(),
            stages: self
                .stages
                .iter()
                .map(|stage| {
                    let latency = stage.recorder.latency();
                    let failures = stage.recorder.failures();
                    StageMetrics {
                        name: stage.name.clone(),
                        executions: stage.recorder.successes() + failures,
                        failures,
                        average_time: latency.mean,
                        latency,
                    }
                })
                .collect(),
        }
    }
}

/// The data as a `T`; the builder's types make any other type impossible, but a mismatch
/// would still be an error, not a panic.
fn take<T: 'static>(data: Data) -> FlextResult<T> {
    data.downcast::<T>().map(|t| *t).map_err(|_| {
        FlextError::operation(format!(
            "Pipeline stage received data that is not a {}",
            short_type_name::<T>()
        ))
    })
}

#[async_trait]
impl<I, O> Handler for Pipeline<I, O>
where
    I: Send + 'static,
    O: Send + 'static,
{
    type Request = I;
    type Response = O;

    fn handler_name(&self) -> &str {
        &self.name
    }

    fn handler_kind(&self) -> flext_constants::HandlerKind {
        flext_constants::HandlerKind::Pipeline
    }

    async fn handle(&self, data: I) -> FlextResult<O> {
        self.process(data).await
    }
}

impl<I, O> MetricsSource for Pipeline<I, O>
where
    I: Send + 'static,
    O: Send + 'static,
{
    fn metric_set(&self) -> MetricSet {
        let m = self.metrics();
        let mut set = MetricSet::new(m.pipeline_name.clone());
        set.push(
            "executions",
            "Runs of the pipeline.",
            MetricValue::Counter(m.executions),
        );
        set.push(
            "successful",
            "Runs through every stage.",
            MetricValue::Counter(m.successful),
        );
        set.push(
            "stage_count",
            "Stages in the pipeline.",
            MetricValue::Gauge(m.stage_count as f64),
        );
        for stage in m.stages {
            set.push_group(
                ("stage", &stage.name),
                [
                    (
                        "stage_failures",
                        "Failures per stage.",
                        MetricValue::Counter(stage.failures),
                    ),
                    (
                        "stage_latency",
                        "Latency per stage.",
                        MetricValue::Latency(stage.latency),
                    ),
                ],
            );
        }
        set
    }
}

impl<I, O> fmt::Debug for Pipeline<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field(
                "stages",
                &self
                    .stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}
