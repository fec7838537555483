//! Sinks (in progress).
pub mod predict_out;
