//! The pre-copy migration model: pure functions, no I/O. (Filled in by the `predict` work.)
