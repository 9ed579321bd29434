//! Delivery of trace files to a tracker's destination.

pub mod batch;
pub mod batcher;
pub mod key;
pub mod pipeline;
