//! Per-command renderers: what `predict`, `passes`, `plot` and `demo` print or draw, and the
//! metrics `passes` serves. Formatting only: every number comes from the model or the
//! records. Streaming outputs of a watch are [`crate::sink`]s instead.
pub mod demo;
pub mod passes;
pub mod passes_metrics;
pub mod plot;
pub mod predict;
