//! Logging into the tenant's log. The host tags every line with the tenant,
//! the pipeline and its version. Use the macros: `mysimbdp::info!("{n} rows")`.

pub use crate::__private::bindings::mysimbdp::pipeline::types::Level;

/// Writes one line at `level`.
pub fn write(level: Level, message: &str) {
    crate::__private::bindings::mysimbdp::pipeline::log::log(level, message);
}

/// Logs a `format!` message at debug level: `mysimbdp::debug!("row {n}")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, &format!($($arg)*)) };
}

/// Logs a `format!` message at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, &format!($($arg)*)) };
}

/// Logs a `format!` message at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, &format!($($arg)*)) };
}

/// Logs a `format!` message at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, &format!($($arg)*)) };
}
