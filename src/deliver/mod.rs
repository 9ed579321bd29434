//! Delivery of trace files to a tracker's destination.

pub mod batch;
pub mod batcher;
pub mod pipeline;
