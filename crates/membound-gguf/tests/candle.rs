//! Cross-check with candle-core's GGUF reader and writer: a file written here is read by
//! `gguf_file::Content::read` with the same metadata, tensor infos and bytes, and a file written
//! by `gguf_file::write` is read here identically. (candle has no MXFP4, so those tensors are
//! left out of the files candle touches.)

mod common;

use std::io::Cursor;

use candle_core::Device;
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use common::*;
use membound_gguf::{GgufFile, GgufWriter, MetaArray, MetaValue};
use membound_spec::DType;

fn to_candle(v: &MetaValue) -> Value {
    match v {
        MetaValue::U8(x) => Value::U8(*x),
        MetaValue::I8(x) => Value::I8(*x),
        MetaValue::U16(x) => Value::U16(*x),
        MetaValue::I16(x) => Value::I16(*x),
        MetaValue::U32(x) => Value::U32(*x),
        MetaValue::I32(x) => Value::I32(*x),
        MetaValue::F32(x) => Value::F32(*x),
        MetaValue::Bool(x) => Value::Bool(*x),
        MetaValue::String(x) => Value::String(x.clone()),
        MetaValue::U64(x) => Value::U64(*x),
        MetaValue::I64(x) => Value::I64(*x),
        MetaValue::F64(x) => Value::F64(*x),
        MetaValue::Array(a) => Value::Array(a.iter().map(|e| to_candle(&e)).collect()),
    }
}

/// candle's `Value` has no `PartialEq`; its `Debug` form is exact (floats print round-trip).
fn same(a: &Value, b: &Value) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn candle_dtype(d: DType) -> GgmlDType {
    match d {
        DType::F32 => GgmlDType::F32,
        DType::F16 => GgmlDType::F16,
        DType::BF16 => GgmlDType::BF16,
        DType::Q8_0 => GgmlDType::Q8_0,
        DType::Q4_K => GgmlDType::Q4K,
        DType::Q6_K => GgmlDType::Q6K,
        other => panic!("{other} not used with candle here"),
    }
}

/// candle's writer cannot keep an empty array's element type: it writes u32.
fn empty_as_u32(a: &MetaArray) -> MetaArray {
    match a {
        a if a.is_empty() => MetaArray::U32(vec![]),
        MetaArray::Array(v) => MetaArray::Array(v.iter().map(empty_as_u32).collect()),
        a => a.clone(),
    }
}

fn candle_fixtures() -> Vec<Fixture> {
    let all = model_tensors(3);
    let n = all.len();
    let kept: Vec<Fixture> = all
        .into_iter()
        .filter(|f| f.dtype != DType::MXFP4)
        .collect();
    assert_eq!(kept.len(), n - 1);
    kept
}

#[test]
fn candle_reads_our_files() {
    let fixtures = candle_fixtures();
    let meta = all_value_metadata();
    let mut w = GgufWriter::new();
    for (k, v) in &meta {
        w.add_meta(k, v.clone()).unwrap();
    }
    for f in &fixtures {
        w.add_tensor(f.name, &f.dims, f.dtype, f.data.as_slice())
            .unwrap();
    }
    let bytes = w.to_bytes().unwrap();
    let ours = GgufFile::from_bytes(&bytes).unwrap();

    let mut reader = Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut reader).unwrap();
    assert_eq!(content.tensor_data_offset, ours.data_offset());
    assert_eq!(content.metadata.len(), meta.len());
    for (k, v) in &meta {
        assert!(
            same(&content.metadata[k], &to_candle(v)),
            "{k}: {:?} vs {v:?}",
            content.metadata[k]
        );
    }
    assert_eq!(content.tensor_infos.len(), fixtures.len());
    for f in &fixtures {
        let info = &content.tensor_infos[f.name];
        let mine = ours.tensor(f.name).unwrap();
        let mut dims: Vec<u64> = info.shape.dims().iter().map(|&d| d as u64).collect();
        dims.reverse(); // candle's shape is outermost first
        assert_eq!(dims, f.dims, "{}", f.name);
        assert_eq!(info.offset, mine.offset);
        assert_eq!(info.ggml_dtype, candle_dtype(f.dtype));
        let qt = content.tensor(&mut reader, f.name, &Device::Cpu).unwrap();
        assert_eq!(qt.storage_size_in_bytes() as u64, mine.n_bytes);
        assert_eq!(qt.data().unwrap().as_ref(), f.data.as_slice(), "{}", f.name);
    }
}

#[test]
fn we_read_candle_files() {
    let fixtures = candle_fixtures();
    let meta = all_value_metadata();
    let values: Vec<(String, Value)> = meta
        .iter()
        .map(|(k, v)| (k.clone(), to_candle(v)))
        .collect();
    let qtensors: Vec<QTensor> = fixtures
        .iter()
        .map(|f| {
            let dims: Vec<usize> = f.dims.iter().rev().map(|&d| d as usize).collect();
            qtensor_from_ggml(candle_dtype(f.dtype), &f.data, dims, &Device::Cpu).unwrap()
        })
        .collect();
    let meta_refs: Vec<(&str, &Value)> = values.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> =
        fixtures.iter().map(|f| f.name).zip(&qtensors).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta_refs, &tensor_refs).unwrap();

    let file = GgufFile::from_vec(out.into_inner()).unwrap();
    assert_eq!(file.version(), 2); // candle writes v2
    assert_eq!(file.metadata().len(), meta.len());
    for ((k, mine), (ck, theirs)) in file.metadata().iter().zip(&values) {
        assert_eq!(k, ck);
        assert!(same(&to_candle(mine), theirs), "{k}");
        let original = &meta.iter().find(|(mk, _)| mk == k).unwrap().1;
        let expected = match original {
            MetaValue::Array(a) => MetaValue::Array(empty_as_u32(a)),
            v => v.clone(),
        };
        assert_eq!(mine, &expected, "{k}");
    }
    assert_eq!(file.tensors().len(), fixtures.len());
    for (info, f) in file.tensors().iter().zip(&fixtures) {
        assert_eq!(info.name, f.name);
        assert_eq!(info.dims, f.dims);
        assert_eq!(info.dtype, f.dtype);
        assert_eq!(info.offset % 32, 0);
        assert_eq!(file.tensor_bytes(f.name).unwrap(), f.data.as_slice());
    }
}
