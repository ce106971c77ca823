//! Logging into the host's trace output through the `log` import. Messages
//! never reach stdout, so they cannot corrupt a result.
//!
//! On a native target (unit tests) messages go to stderr instead, because
//! host imports exist only inside the component.

pub use crate::bindings::cniwasm::host::log::Level;

/// Sends `message` to the host log at `level`.
pub fn emit(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::cniwasm::host::log::emit(level, message);

    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{level:?}: {message}");
}

/// Logs at debug level.
pub fn debug(message: &str) {
    emit(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    emit(Level::Info, message);
}

/// Logs at warn level; use it for errors that the plugin ignores.
pub fn warn(message: &str) {
    emit(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    emit(Level::Error, message);
}
