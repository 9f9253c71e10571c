//! An optional, injectable log sink. The core formats a line only when a
//! logger is installed and enabled for the level, so the default costs
//! nothing. Transcript tests install one that writes into a shared buffer.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

/// Receives the core's log lines (already prefixed with the node id).
pub trait Logger: Send {
    fn enabled(&self, level: Level) -> bool;
    fn log(&self, level: Level, line: &str);
}
