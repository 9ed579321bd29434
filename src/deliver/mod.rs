//! Delivery of trace files to a tracker's destination.

pub mod s3;
