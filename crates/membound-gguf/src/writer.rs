//! The writer: [`GgufWriter`] builds a GGUF v3 file from metadata and tensors (test fixtures,
//! synthetic models). Tensor data is padded to the alignment, which `general.alignment` sets.

use std::borrow::Cow;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use membound_quant::blocks::{Block, as_bytes};
use membound_spec::DType;

use crate::codec::Le;
use crate::error::WriteError;
use crate::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAX_DIMS, tensor_size};
use crate::value::{MetaArray, MetaValue};

/// The version the writer emits.
pub const WRITE_VERSION: u32 = 3;

/// Makes a tensor's bytes when the writer reaches it.
type Produce<'a> = Arc<dyn Fn() -> Result<Vec<u8>, WriteError> + Send + Sync + 'a>;

/// A tensor's bytes: held, or made when written (so a file larger than memory can be
/// written one tensor at a time).
#[derive(Clone)]
enum TensorData<'a> {
    Held(Cow<'a, [u8]>),
    Deferred { len: u64, produce: Produce<'a> },
}

impl fmt::Debug for TensorData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorData::Held(b) => write!(f, "Held({} bytes)", b.len()),
            TensorData::Deferred { len, .. } => write!(f, "Deferred({len} bytes)"),
        }
    }
}

impl TensorData<'_> {
    fn len(&self) -> u64 {
        match self {
            TensorData::Held(b) => b.len() as u64,
            TensorData::Deferred { len, .. } => *len,
        }
    }
}

/// A tensor waiting to be written.
#[derive(Debug, Clone)]
struct PendingTensor<'a> {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
    data: TensorData<'a>,
}

/// Builds a GGUF v3 file. Metadata and tensors are written in the order they were added.
///
/// ```
/// use membound_gguf::{GgufFile, GgufWriter};
/// use membound_spec::DType;
///
/// let mut w = GgufWriter::new();
/// w.add_meta("general.architecture", "llama")?;
/// w.add_f32("output_norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0])?;
/// let file = GgufFile::from_vec(w.to_bytes()?)?;
/// assert_eq!(file.arch()?, "llama");
/// assert_eq!(file.tensor("output_norm.weight").unwrap().dtype, DType::F32);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    /// An empty file (alignment 32).
    pub fn new() -> Self {
        Self::default()
    }

    /// The alignment tensor data will be padded to.
    pub fn alignment(&self) -> u64 {
        self.meta_position(ALIGNMENT_KEY)
            .and_then(|i| self.metadata[i].1.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    fn meta_position(&self, key: &str) -> Option<usize> {
        self.metadata.iter().position(|(k, _)| k == key)
    }

    /// Sets `general.alignment` (a `u32`, added or replaced); it must be a power of two.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self, WriteError> {
        if !alignment.is_power_of_two() {
            return Err(WriteError::BadAlignment(alignment.into()));
        }
        match self.meta_position(ALIGNMENT_KEY) {
            Some(i) => self.metadata[i].1 = MetaValue::U32(alignment),
            None => self
                .metadata
                .push((ALIGNMENT_KEY.to_string(), MetaValue::U32(alignment))),
        }
        Ok(self)
    }

    /// Adds one metadata entry. `general.alignment` must be a power-of-two integer.
    pub fn add_meta(
        &mut self,
        key: &str,
        value: impl Into<MetaValue>,
    ) -> Result<&mut Self, WriteError> {
        if self.meta_position(key).is_some() {
            return Err(WriteError::DuplicateKey(key.to_string()));
        }
        let value = value.into();
        if key == ALIGNMENT_KEY && !value.as_u64().is_some_and(u64::is_power_of_two) {
            return Err(WriteError::BadAlignment(value.as_u64().unwrap_or(0)));
        }
        self.metadata.push((key.to_string(), value));
        Ok(self)
    }

    /// Adds a tensor: `dims` innermost first (ggml's `ne`), `data` exactly the bytes that
    /// `dims` values of `dtype` occupy, with whole blocks in each row.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        dtype: DType,
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, WriteError> {
        let data = data.into();
        let got = data.len() as u64;
        self.push_tensor(name, dims, dtype, got, TensorData::Held(data))
    }

    /// Adds a tensor whose bytes `produce` makes when the file is written (checked then
    /// against the size `dims` of `dtype` occupy): the writer holds one tensor at a time.
    pub fn add_tensor_deferred(
        &mut self,
        name: &str,
        dims: &[u64],
        dtype: DType,
        produce: impl Fn() -> Result<Vec<u8>, WriteError> + Send + Sync + 'a,
    ) -> Result<&mut Self, WriteError> {
        let len = tensor_size(dims, dtype).map_err(|_| self.bad_bytes(name, dims, dtype, 0))?;
        let data = TensorData::Deferred {
            len,
            produce: Arc::new(produce),
        };
        self.push_tensor(name, dims, dtype, len, data)
    }

    fn bad_bytes(&self, name: &str, dims: &[u64], dtype: DType, got: u64) -> WriteError {
        WriteError::BadTensorBytes {
            name: name.to_string(),
            dims: dims.to_vec(),
            dtype,
            expected: tensor_size(dims, dtype).ok(),
            got,
        }
    }

    fn push_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        dtype: DType,
        got: u64,
        data: TensorData<'a>,
    ) -> Result<&mut Self, WriteError> {
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(WriteError::DuplicateTensor(name.to_string()));
        }
        if dims.len() > MAX_DIMS {
            return Err(WriteError::TooManyDims {
                name: name.to_string(),
                n_dims: dims.len(),
            });
        }
        if dtype.ggml_id().is_none() {
            return Err(WriteError::NoGgmlId {
                name: name.to_string(),
                dtype,
            });
        }
        if tensor_size(dims, dtype).ok() != Some(got) {
            return Err(self.bad_bytes(name, dims, dtype, got));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            dtype,
            data,
        });
        Ok(self)
    }

    /// Adds a tensor of quant blocks (its type is the block's).
    pub fn add_blocks<B: Block>(
        &mut self,
        name: &str,
        dims: &[u64],
        blocks: &'a [B],
    ) -> Result<&mut Self, WriteError> {
        self.add_tensor(name, dims, B::DTYPE, as_bytes(blocks))
    }

    /// Adds an F32 tensor.
    pub fn add_f32(
        &mut self,
        name: &str,
        dims: &[u64],
        values: &[f32],
    ) -> Result<&mut Self, WriteError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor(name, dims, DType::F32, bytes)
    }

    /// The header: magic, version, counts, metadata, tensor infos, padding to the alignment.
    fn header(&self) -> Vec<u8> {
        let align = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        WRITE_VERSION.write(&mut out);
        (self.tensors.len() as u64).write(&mut out);
        (self.metadata.len() as u64).write(&mut out);
        for (key, value) in &self.metadata {
            write_str(&mut out, key);
            value.value_type().id().write(&mut out);
            write_value(&mut out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut out, &t.name);
            (t.dims.len() as u32).write(&mut out);
            for &d in &t.dims {
                d.write(&mut out);
            }
            // add_tensor accepted only types with an id.
            t.dtype.ggml_id().unwrap_or(u32::MAX).write(&mut out);
            offset.write(&mut out);
            offset = (offset + t.data.len()).next_multiple_of(align);
        }
        out.resize((out.len() as u64).next_multiple_of(align) as usize, 0);
        out
    }

    /// The file's size in bytes (header, tensors and padding).
    pub fn file_size(&self) -> u64 {
        let align = self.alignment();
        self.header().len() as u64
            + self
                .tensors
                .iter()
                .map(|t| t.data.len().next_multiple_of(align))
                .sum::<u64>()
    }

    /// Writes the file to `w`; returns the bytes written.
    pub fn write_to(&self, w: &mut impl Write) -> Result<u64, WriteError> {
        self.write_with_progress(w, &mut |_, _| {})
    }

    /// Writes the file to `w`, calling `progress(bytes written, file size)` after the header
    /// and after each tensor; returns the bytes written.
    pub fn write_with_progress(
        &self,
        w: &mut impl Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, WriteError> {
        let align = self.alignment();
        let total = self.file_size();
        let header = self.header();
        w.write_all(&header)?;
        let mut written = header.len() as u64;
        progress(written, total);
        for t in &self.tensors {
            let made;
            let bytes: &[u8] = match &t.data {
                TensorData::Held(b) => b,
                TensorData::Deferred { len, produce } => {
                    made = produce()?;
                    if made.len() as u64 != *len {
                        return Err(self.bad_bytes(&t.name, &t.dims, t.dtype, made.len() as u64));
                    }
                    &made
                }
            };
            w.write_all(bytes)?;
            let len = bytes.len() as u64;
            let pad = len.next_multiple_of(align) - len;
            std::io::copy(&mut std::io::repeat(0).take(pad), w)?;
            written += len + pad;
            progress(written, total);
        }
        Ok(written)
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Writes the file to `path` (created or truncated).
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<u64, WriteError> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let n = self.write_to(&mut file)?;
        file.flush()?;
        Ok(n)
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    (s.len() as u64).write(out);
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => v.write(out),
        MetaValue::I8(v) => v.write(out),
        MetaValue::U16(v) => v.write(out),
        MetaValue::I16(v) => v.write(out),
        MetaValue::U32(v) => v.write(out),
        MetaValue::I32(v) => v.write(out),
        MetaValue::F32(v) => v.write(out),
        MetaValue::U64(v) => v.write(out),
        MetaValue::I64(v) => v.write(out),
        MetaValue::F64(v) => v.write(out),
        MetaValue::Bool(v) => u8::from(*v).write(out),
        MetaValue::String(v) => write_str(out, v),
        MetaValue::Array(v) => write_array(out, v),
    }
}

/// Element type, length, elements (an inner array of a nested one is written the same way).
fn write_array(out: &mut Vec<u8>, arr: &MetaArray) {
    fn numbers<T: Le>(out: &mut Vec<u8>, v: &[T]) {
        v.iter().for_each(|x| x.write(out));
    }
    arr.elem_type().id().write(out);
    (arr.len() as u64).write(out);
    match arr {
        MetaArray::U8(v) => numbers(out, v),
        MetaArray::I8(v) => numbers(out, v),
        MetaArray::U16(v) => numbers(out, v),
        MetaArray::I16(v) => numbers(out, v),
        MetaArray::U32(v) => numbers(out, v),
        MetaArray::I32(v) => numbers(out, v),
        MetaArray::F32(v) => numbers(out, v),
        MetaArray::U64(v) => numbers(out, v),
        MetaArray::I64(v) => numbers(out, v),
        MetaArray::F64(v) => numbers(out, v),
        MetaArray::Bool(v) => v.iter().for_each(|&b| u8::from(b).write(out)),
        MetaArray::String(v) => v.iter().for_each(|s| write_str(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|a| write_array(out, a)),
    }
}
