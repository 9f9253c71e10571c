//! concord-raft: the raft consensus algorithm as a pure state machine.
//!
//! No I/O, no clock, no async runtime, no global randomness: ticks, messages
//! and proposals go in; a numbered `Ready` (state to persist, messages to
//! send, entries to apply) comes out. The member actor in the `concord`
//! crate owns all I/O. It is its own crate so that it builds in seconds for
//! its tests and fuzz targets, without the server's dependencies.
