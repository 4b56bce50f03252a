//! The reader: [`GgufFile`] parses and validates the header of a GGUF v2/v3 file held in an
//! mmap (or in memory) and hands out zero-copy views of tensor data.
//!
//! Every length read from the file is checked against the bytes that remain before anything is
//! allocated for it, so no single allocation for a hostile header exceeds a small multiple of the
//! file's size: numeric arrays cost exactly their bytes; strings, nested arrays and table entries
//! (with their hash index) less than 8x their smallest on-disk size (`tests/mutation.rs` checks
//! this with a counting allocator).

use std::collections::HashMap;
use std::path::Path;

use membound_spec::DType;

use crate::codec::Le;
use crate::error::{ErrorKind, GgufError, Result};
use crate::value::{MetaArray, MetaValue, ValueType};

/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// The deepest nesting of arrays the reader accepts (guards the stack against hostile files).
pub const MAX_NESTING: usize = 64;
/// The most tensors a file may have (real models have a few thousand at most).
pub const MAX_TENSORS: u64 = 1 << 16;
/// The most metadata entries a file may have (real models have under a hundred).
pub const MAX_METADATA: u64 = 1 << 16;
/// The longest tensor name, in bytes: ggml's `GGML_MAX_NAME` (64) less its terminating NUL, as
/// llama.cpp's reader enforces.
pub const MAX_NAME_BYTES: u64 = 63;
/// The file name reported in errors for files read from memory.
pub const MEMORY: &str = "<memory>";

/// Smallest metadata entry: key length, value type, one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// One tensor of the table: where its data is and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml's `ne`, innermost first: `dims[0]` is the row length (a weight of shape
    /// `[out, in]` in PyTorch terms has `dims == [in, out]`).
    pub dims: Vec<u64>,
    /// The storage type.
    pub dtype: DType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of data (whole blocks, scales included).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of values (the product of `dims`; 1 for a 0-dimensional tensor).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The layer index and class of the name (see [`crate::tensor_class`]).
    pub fn class(&self) -> (Option<usize>, &str) {
        crate::tensor_class(&self.name)
    }
}

/// Why [`tensor_size`] has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeError {
    /// The element count or the byte size exceeds `i64::MAX` (ggml's sizes are signed).
    Overflow,
    /// The row (`dims[0]`) is not a whole number of blocks.
    NotBlockMultiple { row: u64, block: u64 },
}

/// Bytes of a tensor of `dims` (ggml order) stored as `dtype`, computed without overflow.
pub(crate) fn tensor_size(dims: &[u64], dtype: DType) -> Result<u64, SizeError> {
    let max = i64::MAX as u64;
    let elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= max);
    let elements = elements.ok_or(SizeError::Overflow)?;
    let (row, block) = (dims.first().copied().unwrap_or(1), dtype.block_size());
    if !row.is_multiple_of(block) {
        return Err(SizeError::NotBlockMultiple { row, block });
    }
    // Whole rows of whole blocks: the element count divides exactly.
    (elements / block)
        .checked_mul(dtype.block_bytes())
        .filter(|&n| n <= max)
        .ok_or(SizeError::Overflow)
}

/// The bytes a [`GgufFile`] reads from.
enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed and validated GGUF file: metadata, tensor table and the file's bytes.
pub struct GgufFile {
    source: String,
    storage: Storage,
    header: Header,
}

/// What parsing the header yields.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("source", &self.source)
            .field("version", &self.header.version)
            .field("len", &self.storage.bytes().len())
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file at `path` and parses it. Errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let io_err = |e| GgufError {
            file: source.clone(),
            offset: None,
            kind: ErrorKind::Io(e),
        };
        // A FIFO would block `open`, a directory or device has no meaningful length: look first.
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if !meta.is_file() {
            return Err(GgufError {
                file: source,
                offset: None,
                kind: ErrorKind::NotRegularFile,
            });
        }
        let file = std::fs::File::open(path).map_err(io_err)?;
        // SAFETY: the map is read-only. If another process truncates or rewrites the file while
        // it is mapped, reads may fault or see new bytes; GGUF files are not modified in place
        // by the tools that write them, and this is the accepted contract of mmap-based readers.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
        Self::parse(source, Storage::Mmap(map))
    }

    /// Parses a copy of `bytes` (errors name the file `<memory>`).
    pub fn from_bytes(bytes: &[u8]) -> Result<GgufFile> {
        Self::from_vec(bytes.to_vec())
    }

    /// Parses `bytes`, taking ownership (errors name the file `<memory>`).
    pub fn from_vec(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::parse(MEMORY.to_string(), Storage::Owned(bytes))
    }

    fn parse(source: String, storage: Storage) -> Result<GgufFile> {
        let header = Cursor {
            buf: storage.bytes(),
            pos: 0,
            file: &source,
        }
        .header()?;
        Ok(GgufFile {
            source,
            storage,
            header,
        })
    }

    /// The path the file was opened from, or `<memory>`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute offset of the data section (the end of the header, aligned up).
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.header.metadata
    }

    /// The value of `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.header
            .meta_index
            .get(key)
            .map(|&i| &self.header.metadata[i].1)
    }

    /// The value of `key` converted by `get`, or an error naming the key (missing or of
    /// another type than `expected`).
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        get: impl FnOnce(&'a MetaValue) -> Option<T>,
    ) -> Result<T> {
        let value = self
            .meta(key)
            .ok_or_else(|| self.error(ErrorKind::KeyNotFound(key.to_string())))?;
        get(value).ok_or_else(|| {
            self.error(ErrorKind::WrongType {
                key: key.to_string(),
                expected,
                found: value.value_type(),
            })
        })
    }

    /// `key` as an unsigned integer of any width ([`MetaValue::as_u64`]).
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.typed(key, "a non-negative integer", MetaValue::as_u64)
    }

    /// `key` as a signed integer of any width ([`MetaValue::as_i64`]).
    pub fn meta_i64(&self, key: &str) -> Result<i64> {
        self.typed(key, "an integer", MetaValue::as_i64)
    }

    /// `key` as `f32` ([`MetaValue::as_f32`]).
    pub fn meta_f32(&self, key: &str) -> Result<f32> {
        self.typed(key, "a float", MetaValue::as_f32)
    }

    /// `key` as `f64` ([`MetaValue::as_f64`]).
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        self.typed(key, "a float", MetaValue::as_f64)
    }

    /// `key` as a bool.
    pub fn meta_bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "a bool", MetaValue::as_bool)
    }

    /// `key` as a string.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        self.typed(key, "a string", MetaValue::as_str)
    }

    /// `key` as an array.
    pub fn meta_array(&self, key: &str) -> Result<&MetaArray> {
        self.typed(key, "an array", MetaValue::as_array)
    }

    /// `general.architecture` (`llama`, `qwen3moe`, `gpt-oss`, …).
    pub fn arch(&self) -> Result<&str> {
        self.meta_str("general.architecture")
    }

    /// The architecture-prefixed key `"{arch}.{suffix}"`, e.g. `arch_key("block_count")`.
    pub fn arch_key(&self, suffix: &str) -> Result<String> {
        Ok(format!("{}.{suffix}", self.arch()?))
    }

    /// The value of `"{arch}.{suffix}"`, if the architecture and the key are present.
    pub fn arch_meta(&self, suffix: &str) -> Option<&MetaValue> {
        self.meta(&self.arch_key(suffix).ok()?)
    }

    /// `"{arch}.{suffix}"` as an unsigned integer, e.g. `arch_u64("block_count")`.
    pub fn arch_u64(&self, suffix: &str) -> Result<u64> {
        self.meta_u64(&self.arch_key(suffix)?)
    }

    /// `"{arch}.{suffix}"` as `f32`, e.g. `arch_f32("rope.freq_base")`.
    pub fn arch_f32(&self, suffix: &str) -> Result<f32> {
        self.meta_f32(&self.arch_key(suffix)?)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header
            .tensor_index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The data of tensor `name`: a zero-copy view of the file (unaligned in memory in general;
    /// copy with `membound_quant::blocks::from_bytes` to get typed blocks).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self
            .tensor(name)
            .ok_or_else(|| self.error(ErrorKind::TensorNotFound(name.to_string())))?;
        Ok(self.data_of(info))
    }

    /// Every tensor with its data, in file order.
    pub fn tensors_with_data(&self) -> impl Iterator<Item = (&TensorInfo, &[u8])> {
        self.header.tensors.iter().map(|t| (t, self.data_of(t)))
    }

    /// Bytes of all tensor data (without padding).
    pub fn total_tensor_bytes(&self) -> u64 {
        self.header.tensors.iter().map(|t| t.n_bytes).sum()
    }

    /// The data of a tensor of this file's table (bounds were validated when parsing).
    fn data_of(&self, info: &TensorInfo) -> &[u8] {
        // Validated in `Cursor::check_tensors`: data_offset + offset + n_bytes <= file length.
        let start = (self.header.data_offset + info.offset) as usize;
        &self.bytes()[start..start + info.n_bytes as usize]
    }

    fn error(&self, kind: ErrorKind) -> GgufError {
        GgufError {
            file: self.source.clone(),
            offset: None,
            kind,
        }
    }
}

/// A read position in the file's bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, at: usize, kind: ErrorKind) -> GgufError {
        GgufError {
            file: self.file.to_string(),
            offset: Some(at as u64),
            kind,
        }
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n as u64 > self.remaining() {
            let kind = ErrorKind::Truncated {
                what,
                needed: n as u64,
                available: self.remaining(),
            };
            return Err(self.err(self.pos, kind));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn read<T: Le>(&mut self, what: &'static str) -> Result<T> {
        Ok(T::read(self.take(T::SIZE, what)?))
    }

    /// Checks that `len` items of at least `min_each` bytes fit in what remains (error at
    /// `at`, the length field), before anything is allocated for them.
    fn check_len(&self, at: usize, what: &'static str, len: u64, min_each: u64) -> Result<usize> {
        let needed = u128::from(len) * u128::from(min_each);
        let remaining = self.remaining();
        if needed > u128::from(remaining) {
            return Err(self.err(
                at,
                ErrorKind::LengthTooLarge {
                    what,
                    len,
                    needed,
                    remaining,
                },
            ));
        }
        // len * min_each <= remaining <= usize::MAX and min_each >= 1.
        Ok(len as usize)
    }

    /// The raw bytes of a string (length, then bytes).
    fn string_bytes(&mut self) -> Result<&'a [u8]> {
        let at = self.pos;
        let len = self.read::<u64>("string length")?;
        let len = self.check_len(at, "string", len, 1)?;
        self.take(len, "string")
    }

    /// A key or tensor name: must be UTF-8.
    fn string(&mut self) -> Result<String> {
        let start = self.pos + 8;
        let bytes = self.string_bytes()?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(self.err(start + e.valid_up_to(), ErrorKind::InvalidUtf8(e))),
        }
    }

    /// A string value: invalid UTF-8 becomes U+FFFD, as llama.cpp loads such vocabularies
    /// (byte-level tokens) without complaint.
    fn string_value(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.string_bytes()?).into_owned())
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let at = self.pos;
        let id = self.read::<u32>("value type")?;
        ValueType::from_id(id).ok_or_else(|| self.err(at, ErrorKind::UnknownValueType(id)))
    }

    fn bool(&mut self) -> Result<bool> {
        let at = self.pos;
        match self.read::<u8>("bool")? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(at, ErrorKind::InvalidBool(b))),
        }
    }

    fn value(&mut self, ty: ValueType) -> Result<MetaValue> {
        Ok(match ty {
            ValueType::U8 => MetaValue::U8(self.read("u8")?),
            ValueType::I8 => MetaValue::I8(self.read("i8")?),
            ValueType::U16 => MetaValue::U16(self.read("u16")?),
            ValueType::I16 => MetaValue::I16(self.read("i16")?),
            ValueType::U32 => MetaValue::U32(self.read("u32")?),
            ValueType::I32 => MetaValue::I32(self.read("i32")?),
            ValueType::F32 => MetaValue::F32(self.read("f32")?),
            ValueType::U64 => MetaValue::U64(self.read("u64")?),
            ValueType::I64 => MetaValue::I64(self.read("i64")?),
            ValueType::F64 => MetaValue::F64(self.read("f64")?),
            ValueType::Bool => MetaValue::Bool(self.bool()?),
            ValueType::String => MetaValue::String(self.string_value()?),
            ValueType::Array => MetaValue::Array(self.array(0)?),
        })
    }

    /// `len` numbers of type `T`, read in one slice.
    fn numbers<T: Le>(&mut self, len: usize) -> Result<Vec<T>> {
        let bytes = self.take(len * T::SIZE, "array elements")?;
        Ok(bytes.chunks_exact(T::SIZE).map(T::read).collect())
    }

    /// `len` items read by `item` (for strings, bools and arrays).
    fn items<T>(
        &mut self,
        len: usize,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// An array (after its value type): element type, length, elements.
    fn array(&mut self, depth: usize) -> Result<MetaArray> {
        let at = self.pos;
        if depth >= MAX_NESTING {
            return Err(self.err(at, ErrorKind::NestingTooDeep { max: MAX_NESTING }));
        }
        let elem = self.value_type()?;
        let len_at = self.pos;
        let len = self.read::<u64>("array length")?;
        let len = self.check_len(len_at, "array", len, elem.min_disk_size())?;
        Ok(match elem {
            ValueType::U8 => MetaArray::U8(self.numbers(len)?),
            ValueType::I8 => MetaArray::I8(self.numbers(len)?),
            ValueType::U16 => MetaArray::U16(self.numbers(len)?),
            ValueType::I16 => MetaArray::I16(self.numbers(len)?),
            ValueType::U32 => MetaArray::U32(self.numbers(len)?),
            ValueType::I32 => MetaArray::I32(self.numbers(len)?),
            ValueType::F32 => MetaArray::F32(self.numbers(len)?),
            ValueType::U64 => MetaArray::U64(self.numbers(len)?),
            ValueType::I64 => MetaArray::I64(self.numbers(len)?),
            ValueType::F64 => MetaArray::F64(self.numbers(len)?),
            ValueType::Bool => MetaArray::Bool(self.items(len, Self::bool)?),
            ValueType::String => MetaArray::String(self.items(len, Self::string_value)?),
            ValueType::Array => MetaArray::Array(self.items(len, |c| c.array(depth + 1))?),
        })
    }

    /// A count field, checked against `max` and the bytes that remain.
    fn count(&mut self, what: &'static str, min_each: u64, max: u64) -> Result<(usize, usize)> {
        let at = self.pos;
        let n = self.read::<u64>(what)?;
        if n > max {
            return Err(self.err(
                at,
                ErrorKind::TooMany {
                    what,
                    count: n,
                    max,
                },
            ));
        }
        Ok((at, self.check_len(at, what, n, min_each)?))
    }

    fn header(mut self) -> Result<Header> {
        let magic = self.take(4, "magic")?;
        if magic != b"GGUF" {
            let found = [magic[0], magic[1], magic[2], magic[3]];
            return Err(self.err(0, ErrorKind::BadMagic { found }));
        }
        let version = self.read::<u32>("version")?;
        match version {
            2 | 3 => {}
            v if (1..=3).contains(&v.swap_bytes()) => {
                return Err(self.err(
                    4,
                    ErrorKind::BigEndian {
                        version: v.swap_bytes(),
                    },
                ));
            }
            v => return Err(self.err(4, ErrorKind::UnsupportedVersion(v))),
        }
        let (_, n_tensors) = self.count("tensor count", MIN_TENSOR_INFO_BYTES, MAX_TENSORS)?;
        let (kv_at, n_kv) = self.count("metadata kv count", MIN_KV_BYTES, MAX_METADATA)?;
        // Both tables together must fit as well.
        let needed = n_tensors as u64 * MIN_TENSOR_INFO_BYTES + n_kv as u64 * MIN_KV_BYTES;
        self.check_len(kv_at, "metadata kv and tensor tables", needed, 1)?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut meta_index = HashMap::with_capacity(n_kv);
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..n_kv {
            let at = self.pos;
            let key = self.string()?;
            if meta_index.contains_key(&key) {
                return Err(self.err(at, ErrorKind::DuplicateKey(key)));
            }
            let ty = self.value_type()?;
            let value_at = self.pos;
            let value = self.value(ty)?;
            if key == ALIGNMENT_KEY {
                alignment = match value.as_u64() {
                    Some(a) if a.is_power_of_two() => a,
                    _ => {
                        return Err(
                            self.err(value_at, ErrorKind::BadAlignment(format!("{value:?}")))
                        );
                    }
                };
            }
            meta_index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        let mut offset_fields = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let at = self.pos;
            let (info, offset_at) = self.tensor_info()?;
            if tensor_index.contains_key(&info.name) {
                return Err(self.err(at, ErrorKind::DuplicateTensor(info.name)));
            }
            tensor_index.insert(info.name.clone(), tensors.len());
            tensors.push(info);
            offset_fields.push(offset_at);
        }

        // The header ends inside the buffer, so aligning up cannot overflow a u64.
        let data_offset = (self.pos as u64).next_multiple_of(alignment);
        self.check_tensors(&tensors, &offset_fields, data_offset, alignment)?;
        Ok(Header {
            version,
            alignment,
            data_offset,
            metadata,
            meta_index,
            tensors,
            tensor_index,
        })
    }

    /// One tensor info; also returns the position of its offset field.
    fn tensor_info(&mut self) -> Result<(TensorInfo, usize)> {
        let name_at = self.pos;
        let name = self.string()?;
        if name.len() as u64 > MAX_NAME_BYTES {
            let (len, max) = (name.len() as u64, MAX_NAME_BYTES);
            return Err(self.err(name_at, ErrorKind::NameTooLong { len, max }));
        }
        let n_dims_at = self.pos;
        let n_dims = self.read::<u32>("n_dims")?;
        if n_dims as usize > MAX_DIMS {
            return Err(self.err(n_dims_at, ErrorKind::TooManyDims { name, n_dims }));
        }
        let dims_at = self.pos;
        let dims = self.numbers::<u64>(n_dims as usize)?;
        let type_at = self.pos;
        let id = self.read::<u32>("ggml type")?;
        let offset_at = self.pos;
        let offset = self.read::<u64>("tensor offset")?;
        let Some(dtype) = DType::from_ggml_id(id) else {
            return Err(self.err(type_at, ErrorKind::UnknownGgmlType { name, id }));
        };
        let n_bytes = match tensor_size(&dims, dtype) {
            Ok(n) => n,
            Err(SizeError::Overflow) => {
                return Err(self.err(dims_at, ErrorKind::DimsOverflow { name, dims }));
            }
            Err(SizeError::NotBlockMultiple { row, block }) => {
                return Err(self.err(
                    dims_at,
                    ErrorKind::NotBlockMultiple {
                        name,
                        dtype,
                        row,
                        block,
                    },
                ));
            }
        };
        Ok((
            TensorInfo {
                name,
                dims,
                dtype,
                offset,
                n_bytes,
            },
            offset_at,
        ))
    }

    /// Alignment, bounds and overlap of every tensor's data (errors at its offset field).
    fn check_tensors(
        &self,
        tensors: &[TensorInfo],
        offset_fields: &[usize],
        data_offset: u64,
        alignment: u64,
    ) -> Result<()> {
        let file_len = self.buf.len() as u64;
        for (t, &at) in tensors.iter().zip(offset_fields) {
            if !t.offset.is_multiple_of(alignment) {
                let kind = ErrorKind::MisalignedTensor {
                    name: t.name.clone(),
                    offset: t.offset,
                    alignment,
                };
                return Err(self.err(at, kind));
            }
            let start = data_offset.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.n_bytes));
            match (start, end) {
                (Some(_), Some(end)) if end <= file_len => {}
                (start, end) => {
                    let start = start.unwrap_or(u64::MAX);
                    let end = end.unwrap_or(u64::MAX);
                    let kind = ErrorKind::TensorPastEnd {
                        name: t.name.clone(),
                        start,
                        end,
                        file_len,
                    };
                    return Err(self.err(at, kind));
                }
            }
        }
        let mut order: Vec<usize> = (0..tensors.len())
            .filter(|&i| tensors[i].n_bytes > 0)
            .collect();
        order.sort_by_key(|&i| (tensors[i].offset, i));
        // In offset order each tensor must start at or after the end of the one before.
        for pair in order.windows(2) {
            let (prev, next) = (&tensors[pair[0]], &tensors[pair[1]]);
            if next.offset < prev.offset + prev.n_bytes {
                let (first, second) = (prev.name.clone(), next.name.clone());
                return Err(self.err(
                    offset_fields[pair[1]],
                    ErrorKind::OverlappingTensors { first, second },
                ));
            }
        }
        Ok(())
    }
}
