//! Times the steps of a restore or verification and reports them to the progress display.

use std::time::Instant;

use serde::Serialize;

/// Where progress and warnings go (the CLI draws them; tests ignore them).
pub trait Progress {
    /// Step `number` of `total` begins.
    fn step(&mut self, number: usize, total: usize, title: &str);
    fn warn(&mut self, message: &str);
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub step: String,
    pub seconds: f64,
}

/// Times the steps of a run and reports them to the progress display.
pub(super) struct Steps<'p> {
    pub(super) progress: &'p mut dyn Progress,
    total: usize,
    pub(super) done: Vec<StepTiming>,
    current: Option<(String, Instant)>,
}

impl<'p> Steps<'p> {
    pub(super) fn new(progress: &'p mut dyn Progress, total: usize) -> Self {
        Steps {
            progress,
            total,
            done: Vec::new(),
            current: None,
        }
    }

    pub(super) fn begin(&mut self, title: &str) {
        self.finish();
        let number = self.done.len() + 1;
        tracing::info!(step = number, total = self.total, title, "step begins");
        self.progress.step(number, self.total, title);
        self.current = Some((title.to_string(), Instant::now()));
    }

    pub(super) fn finish(&mut self) {
        if let Some((step, started)) = self.current.take() {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(title = step, seconds, "step done");
            self.done.push(StepTiming { step, seconds });
        }
    }
}
