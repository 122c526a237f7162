//! The runner's one error type. Every fallible function of the library
//! returns [`Result`]; an error keeps its cause (`source()`), and says
//! which exit status it means ([`Error::exit_code`]).

use crate::exit_codes::{EXIT_KERNEL_FAILURE, EXIT_USAGE};

/// Why something the runner tried did not work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: an argument, a seed range, a shard, a document that is
    /// not what it should be.
    #[error("{0}")]
    Usage(String),
    /// Missing set-up: QEMU, a boot image, a firmware file; or an
    /// accelerator that cannot run the kernel.
    #[error("{0}")]
    Setup(String),
    /// A file or a socket could not be read or written.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// JSON that does not parse.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// An ELF file the runner could not read.
    #[error("{what}: {source}")]
    Elf {
        what: String,
        #[source]
        source: object::Error,
    },
    /// A chart could not be drawn.
    #[error("drawing {what}: {source}")]
    Draw {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// QEMU's machine protocol answered with an error, or not as QMP does.
    #[error("QMP: {0}")]
    Qmp(String),
    /// A boot the runner needed (the bench's kernel harness) failed.
    #[error("{0}")]
    Kernel(String),
}

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    /// An [`Error::Json`] saying what was being read.
    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Error {
        Error::Json { what: what.into(), source }
    }

    /// An [`Error::Draw`] saying what was being drawn.
    pub fn draw(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Draw { what: what.into(), source: Box::new(source) }
    }

    /// The `extregs` exit status this error ends a command with: a failed
    /// kernel is 1, everything else is usage or set-up, 2.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Kernel(_) => EXIT_KERNEL_FAILURE,
            _ => EXIT_USAGE,
        }
    }
}

/// The runner's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_error_keeps_its_cause_and_says_what_failed() {
        let cause = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = Error::io("reading campaign.json", cause);
        assert_eq!(error.to_string(), "reading campaign.json: no such file");
        assert_eq!(error.source().expect("a cause").to_string(), "no such file");
        assert_eq!(error.exit_code(), EXIT_USAGE);
        assert_eq!(Error::Kernel("the harness failed".into()).exit_code(), EXIT_KERNEL_FAILURE);
    }
}
