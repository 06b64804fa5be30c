//! Standard output for every command, where a reader that went away (`quern status | head`) means "stop now".
//!
//! Rust ignores SIGPIPE, so a write to a pipe nobody reads fails with `EPIPE`, and `println!` turns that failure
//! into a panic. The workspace forbids `unsafe`, so the signal is not restored; instead each line goes through
//! [`outln!`], whose [`StdoutClosed`] error travels up through `?` like any other, and `main` ends the process
//! quietly, status 0, when it arrives (see [`is_closed`]). A command with something left to do after printing
//! (errors to report on stderr, an audit line, its own exit status) catches it with [`closed_is_fine`] instead.
//! Any other write failure (a full disk behind `>`) is a real error.

use std::fmt;
use std::io::{self, Write};

/// Printing stopped because the reader of standard output went away: not a failure of the command.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `args` and a newline to standard output; fails with [`StdoutClosed`] when the pipe is closed.
pub fn line(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    // Stdout is line-buffered: the newline flushes the line, so a closed pipe is found here, not at exit.
    match stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(error) => Err(anyhow::Error::new(error).context("writing to standard output")),
    }
}

/// Whether `error` is (or wraps) [`StdoutClosed`].
pub fn is_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<StdoutClosed>())
}

/// For printing that matters less than what follows it (an audit line, errors on stderr, the exit status):
/// `Ok` when the reader went away, so the command carries on; any other write error as it was.
pub fn closed_is_fine(printed: anyhow::Result<()>) -> anyhow::Result<()> {
    match printed {
        Err(error) if is_closed(&error) => Ok(()),
        other => other,
    }
}

/// `println!` for commands: `outln!("{x}")?`. Returns `anyhow::Result<()>`; see [`line`].
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

pub(crate) use outln;
