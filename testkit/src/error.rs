//! The one error type of the testkit.

use std::{io, path::PathBuf, time::Duration};

/// Why a server could not be started or stopped.
///
/// The messages are written for the person reading a failed test: they say
/// what is missing and how to install it, and carry the tail of the server's
/// log when the server itself refused to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server binary is not installed.
    #[error(
        "`{binary}` was not found (looked in {searched}); install it with \
         `apt-get install -y {package}` (Debian package `{package}`), or run \
         ./scripts/test, which installs it"
    )]
    MissingBinary {
        /// The executable that was looked for.
        binary: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
        /// Where it was looked for, for the message.
        searched: String,
    },
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper command (such as `initdb`) exited with a failure.
    #[error("`{command}` failed with {status}:\n{output}")]
    Command {
        /// The command line that failed.
        command: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its combined output.
        output: String,
    },
    /// The server process exited before it became ready.
    #[error("{server} exited during start-up with {status}; last lines of {log}:\n{tail}")]
    Exited {
        /// Which server.
        server: &'static str,
        /// How it exited.
        status: std::process::ExitStatus,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// The server did not become ready in time.
    #[error("{server} was not ready after {waited:?}; last lines of {log}:\n{tail}")]
    NotReady {
        /// Which server.
        server: &'static str,
        /// How long the testkit waited.
        waited: Duration,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// A method was called in the wrong state (e.g. `start_again` while running).
    #[error("{0}")]
    State(&'static str),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
