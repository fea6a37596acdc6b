//! The one error type of the crate; `python.rs` maps it onto Python exceptions.
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A caller-supplied value is invalid (maps to ValueError).
    #[error("{0}")]
    Value(String),
}

pub type Result<T> = std::result::Result<T, Error>;
