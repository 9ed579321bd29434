//! Work every replica runs beside the reconcilers: delivery pipelines kept in
//! line with the Trackers, key event notifiers kept in line with the
//! KeyEventNotifications, this replica's delivery report, and the leader
//! election that decides which replica runs the reconcilers (`controller`).
//!
//! Runners use `controller` (its `Context`, the signing keys, the report
//! format); `controller` never uses a runner.

pub mod delivery;
pub mod leader;
pub mod notify;
pub mod report;
pub mod watch;
