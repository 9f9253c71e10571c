//! concord-check: the checkers the deterministic simulation runs on what it
//! recorded. Pure, deterministic (ordered maps only), no I/O, no
//! dependencies.
//!
//! - [`history`]: what the clients saw (ops with times, calls, outcomes);
//! - [`log`]: what the system says it wrote (one entry per revision, as a
//!   watch from the first revision delivers it);
//! - [`model`]: a small reference store with etcd's semantics, [`index`]:
//!   every revision of a log at once;
//! - [`linearizable`]: history against log ([`check`]);
//! - [`final_state`]: members' final states against the log
//!   ([`check_final_states`]);
//! - [`violation`]: what they report.

#![forbid(unsafe_code)]

pub mod final_state;
pub mod history;
pub mod index;
pub mod linearizable;
pub mod log;
pub mod model;
pub mod violation;

pub use final_state::check_final_states;
pub use linearizable::{check, Stats};
pub use violation::{OpRef, Violation, ViolationKind};
