//! Typed errors: every reader error names the file (its path, or `<memory>`) and, where the
//! file itself is at fault, the byte offset where reading went wrong.

use std::fmt;

use membound_spec::DType;

use crate::value::ValueType;

/// A failure to read a GGUF file or to look something up in one.
#[derive(Debug, thiserror::Error)]
#[error("{file}{at}: {kind}", at = At(*offset))]
pub struct GgufError {
    /// The path the file was opened from, or `<memory>`.
    pub file: String,
    /// Absolute byte offset in the file where the problem was found (`None` for failures that
    /// are not about a place in the file: opening it, a missing key or tensor).
    pub offset: Option<u64>,
    /// What went wrong (part of the message, so not repeated as the error's source).
    pub kind: ErrorKind,
}

/// Formats an optional offset as `" at byte N"`.
struct At(Option<u64>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(off) => write!(f, " at byte {off}"),
            None => Ok(()),
        }
    }
}

/// The kinds of [`GgufError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Opening or mapping the file failed.
    #[error("cannot open or map the file: {0}")]
    Io(#[from] std::io::Error),
    /// The path is a directory, FIFO, device or socket: only regular files are read.
    #[error("not a regular file")]
    NotRegularFile,
    /// More tensors or metadata entries than any model file has.
    #[error("{what} {count} is more than {max}")]
    TooMany {
        what: &'static str,
        count: u64,
        max: u64,
    },
    /// A tensor name of `GGML_MAX_NAME` (64) bytes or more, which ggml cannot hold.
    #[error("tensor name of {len} bytes is too long (ggml allows at most {max})")]
    NameTooLong { len: u64, max: u64 },
    /// A fixed-size field runs past the end of the file.
    #[error("file is truncated: {what} needs {needed} bytes, only {available} remain")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    /// The version field reads as a small number only when byte-swapped.
    #[error("big-endian GGUF (version {version} byte-swapped) is not supported")]
    BigEndian { version: u32 },
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {0} (only v2 and v3 are read)")]
    UnsupportedVersion(u32),
    /// A count or length larger than the remaining bytes could hold, caught before allocating.
    #[error("{what} of {len} needs at least {needed} bytes, only {remaining} remain")]
    LengthTooLarge {
        what: &'static str,
        len: u64,
        needed: u128,
        remaining: u64,
    },
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8 ({0})")]
    InvalidUtf8(std::str::Utf8Error),
    /// A metadata value type id outside 0..=12.
    #[error("unknown metadata value type {0}")]
    UnknownValueType(u32),
    /// A bool stored as something other than 0 or 1.
    #[error("invalid bool byte {0} (must be 0 or 1)")]
    InvalidBool(u8),
    /// Arrays nested deeper than the reader allows.
    #[error("arrays nested deeper than {max}")]
    NestingTooDeep { max: usize },
    /// The same metadata key twice.
    #[error("duplicate metadata key `{0}`")]
    DuplicateKey(String),
    /// `general.alignment` is zero, not a power of two, or not an integer.
    #[error("general.alignment must be a non-zero power of two integer, found {0}")]
    BadAlignment(String),
    /// More than four dimensions.
    #[error("tensor {name} has {n_dims} dimensions (at most 4)")]
    TooManyDims { name: String, n_dims: u32 },
    /// A ggml type id this crate does not know.
    #[error("unknown ggml type id {id} for tensor {name}")]
    UnknownGgmlType { name: String, id: u32 },
    /// The dimensions' product (or the byte size) overflows.
    #[error("tensor {name}: dimensions {dims:?} overflow")]
    DimsOverflow { name: String, dims: Vec<u64> },
    /// The row length (`ne[0]`) is not a whole number of the type's blocks.
    #[error(
        "tensor {name}: row of {row} values is not a multiple of the {dtype} block size {block}"
    )]
    NotBlockMultiple {
        name: String,
        dtype: DType,
        row: u64,
        block: u64,
    },
    /// The same tensor name twice.
    #[error("duplicate tensor name {0}")]
    DuplicateTensor(String),
    /// A tensor's offset is not a multiple of the alignment.
    #[error("tensor {name}: data offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        name: String,
        offset: u64,
        alignment: u64,
    },
    /// A tensor's data extends past the end of the file.
    #[error(
        "tensor {name}: data [{start}, {end}) runs past the end of the file ({file_len} bytes)"
    )]
    TensorPastEnd {
        name: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    /// Two tensors share bytes.
    #[error("tensors {first} and {second} overlap")]
    OverlappingTensors { first: String, second: String },
    /// No tensor of that name.
    #[error("no tensor named {0}")]
    TensorNotFound(String),
    /// No metadata key of that name.
    #[error("no metadata key `{0}`")]
    KeyNotFound(String),
    /// A metadata value of another type than asked for.
    #[error("metadata `{key}` is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: ValueType,
    },
}

/// Shorthand for results of this crate's reader.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;

/// A failure to write a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// Writing to the destination failed.
    #[error("writing GGUF: {0}")]
    Io(#[from] std::io::Error),
    /// The same metadata key twice.
    #[error("duplicate metadata key `{0}`")]
    DuplicateKey(String),
    /// The same tensor name twice.
    #[error("duplicate tensor name {0}")]
    DuplicateTensor(String),
    /// An alignment that is zero or not a power of two.
    #[error("alignment {0} is not a non-zero power of two")]
    BadAlignment(u64),
    /// A type that GGUF cannot hold (no ggml id).
    #[error("tensor {name}: {dtype} has no ggml type id")]
    NoGgmlId { name: String, dtype: DType },
    /// More than four dimensions.
    #[error("tensor {name} has {n_dims} dimensions (at most 4)")]
    TooManyDims { name: String, n_dims: usize },
    /// The bytes given do not match the dims and type.
    #[error("tensor {name}: {dims:?} of {dtype} needs {expected:?} bytes, got {got}")]
    BadTensorBytes {
        name: String,
        dims: Vec<u64>,
        dtype: DType,
        expected: Option<u64>,
        got: u64,
    },
    /// Making a deferred tensor's bytes failed.
    #[error("tensor {name}: {problem}")]
    Produce { name: String, problem: String },
}
