//! Measurement sources (in progress).
