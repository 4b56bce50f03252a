//! Round trips through the writer and reader, and every robustness case of the reader with the
//! error kind and the byte offset it reports.

mod common;

use common::*;
use membound_gguf::{
    ErrorKind, GgufError, GgufFile, GgufWriter, MAX_NESTING, MAX_TENSORS, MEMORY, MetaArray,
    MetaValue, ValueType, WriteError,
};
use membound_spec::DType;

fn read_err(bytes: Vec<u8>) -> GgufError {
    let e = GgufFile::from_vec(bytes).expect_err("the reader accepted a broken file");
    assert_eq!(e.file, MEMORY);
    let msg = e.to_string();
    assert!(msg.starts_with("<memory> at byte "), "{msg}");
    e
}

// ---------------------------------------------------------------- round trips

#[test]
fn every_value_type_round_trips_in_order() {
    let meta = all_value_metadata();
    let file = GgufFile::from_vec(all_values_bytes()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.metadata(), meta.as_slice());
    assert!(file.tensors().is_empty());
    for (k, v) in &meta {
        assert_eq!(file.meta(k), Some(v), "{k}");
    }
    let deep = file.meta_array("a.deep").unwrap();
    assert_eq!(deep.elem_type(), ValueType::Array);
    let Some(MetaValue::Array(inner)) = deep.get(0) else {
        panic!("a.deep[0] is not an array")
    };
    assert_eq!(inner.get(1), Some(MetaValue::Array(MetaArray::F64(vec![]))));
    assert_eq!(
        file.meta_array("a.empty_u32").unwrap(),
        &MetaArray::U32(vec![])
    );
}

#[test]
fn synthetic_model_round_trips_byte_identically() {
    let fixtures = model_tensors(1);
    let bytes = model_writer(&fixtures).to_bytes().unwrap();
    let file = GgufFile::from_bytes(&bytes).unwrap();
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset() % 32, 0);
    assert_eq!(file.tensors().len(), fixtures.len());
    let mut expected_offset = 0;
    for (info, fx) in file.tensors().iter().zip(&fixtures) {
        assert_eq!(info.name, fx.name);
        assert_eq!(info.dims, fx.dims);
        assert_eq!(info.dtype, fx.dtype);
        assert_eq!(info.n_bytes, fx.dtype.bytes_for(info.n_elements()).unwrap());
        assert_eq!(info.n_bytes, fx.data.len() as u64);
        assert_eq!(info.offset, expected_offset, "{}", info.name);
        expected_offset = (expected_offset + info.n_bytes).next_multiple_of(32);
        assert_eq!(file.tensor_bytes(fx.name).unwrap(), fx.data.as_slice());
    }
    // Sizes by ggml's table: Q4_K 144 per 256, Q8_0 34 per 32, MXFP4 17 per 32, Q6_K 210 per 256.
    assert_eq!(file.tensor("token_embd.weight").unwrap().n_bytes, 8 * 144);
    assert_eq!(file.tensor("blk.0.attn_q.weight").unwrap().n_bytes, 32 * 34);
    assert_eq!(
        file.tensor("blk.0.ffn_down_exps.weight").unwrap().n_bytes,
        64 * 17
    );
    assert_eq!(file.tensor("output.weight").unwrap().n_bytes, 4 * 210);
    assert_eq!(bytes.len() as u64, file.data_offset() + expected_offset);
    assert_eq!(
        file.total_tensor_bytes(),
        fixtures.iter().map(|f| f.data.len() as u64).sum::<u64>()
    );

    // Everything read back, written again, gives the same bytes.
    let mut w = GgufWriter::new();
    for (k, v) in file.metadata() {
        w.add_meta(k, v.clone()).unwrap();
    }
    for (info, data) in file.tensors_with_data() {
        w.add_tensor(&info.name, &info.dims, info.dtype, data)
            .unwrap();
    }
    assert_eq!(w.to_bytes().unwrap(), bytes);
}

#[test]
fn metadata_getters() {
    let file = GgufFile::from_vec(model_bytes()).unwrap();
    assert_eq!(file.arch().unwrap(), "llama");
    assert_eq!(file.arch_u64("block_count").unwrap(), 2); // stored as u32
    assert_eq!(
        file.meta_u64(&format!("{}.embedding_length", file.arch().unwrap()))
            .unwrap(),
        64
    );
    assert_eq!(file.arch_f32("rope.freq_base").unwrap(), 500_000.0);
    assert_eq!(file.meta_f64("llama.rope.freq_base").unwrap(), 500_000.0);
    assert_eq!(file.meta_i64("llama.block_count").unwrap(), 2);
    assert_eq!(file.arch_meta("block_count"), Some(&MetaValue::U32(2)));
    assert_eq!(file.arch_meta("nope"), None);
    let kv = file.meta_array("llama.attention.head_count_kv").unwrap();
    assert_eq!(kv.to_u64_vec(), Some(vec![2, 4]));
    assert_eq!(file.meta_str("general.name").unwrap(), "membound synthetic");

    let e = file.meta_u64("general.name").unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::WrongType { key, found: ValueType::String, .. } if key == "general.name")
    );
    assert_eq!(e.offset, None);
    let e = file.arch_u64("expert_count").unwrap_err();
    assert!(
        matches!(&e.kind, ErrorKind::KeyNotFound(k) if k == "llama.expert_count"),
        "{e}"
    );
    let e = file.meta_bool("general.architecture").unwrap_err();
    assert_eq!(
        e.to_string(),
        "<memory>: metadata `general.architecture` is string, expected a bool"
    );
    let e = file.tensor_bytes("blk.9.attn_q.weight").unwrap_err();
    assert!(matches!(&e.kind, ErrorKind::TensorNotFound(n) if n == "blk.9.attn_q.weight"));
    assert_eq!(
        file.tensor("blk.0.ffn_down_exps.weight").unwrap().class(),
        (Some(0), "ffn_down_exps")
    );
}

#[test]
fn alignment_is_honoured() {
    let fixtures = model_tensors(2);
    for (align, via_meta) in [(64u32, false), (128, true), (1, false)] {
        let mut w = model_writer(&fixtures);
        if via_meta {
            w.add_meta("general.alignment", u64::from(align)).unwrap();
        } else {
            w.set_alignment(align).unwrap();
        }
        assert_eq!(w.alignment(), u64::from(align));
        let bytes = w.to_bytes().unwrap();
        let file = GgufFile::from_bytes(&bytes).unwrap();
        assert_eq!(file.alignment(), u64::from(align));
        assert_eq!(file.data_offset() % u64::from(align), 0);
        for (info, fx) in file.tensors_with_data().zip(&fixtures) {
            assert_eq!(info.0.offset % u64::from(align), 0);
            assert_eq!(info.1, fx.data.as_slice());
        }
        assert_eq!(bytes.len() % align as usize, 0);
    }
}

#[test]
fn version_2_and_minimal_files_are_read() {
    let mut bytes = model_bytes();
    put_u32(&mut bytes, 4, 2);
    let file = GgufFile::from_vec(bytes).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.tensors().len(), 7);

    let empty = GgufWriter::new().to_bytes().unwrap();
    assert_eq!(empty.len(), 32); // 24-byte header padded to 32
    let file = GgufFile::from_bytes(&empty).unwrap();
    assert_eq!(
        (
            file.data_offset(),
            file.metadata().len(),
            file.tensors().len()
        ),
        (32, 0, 0)
    );
    // Without the padding: no tensors, so nothing needs the data section.
    assert!(GgufFile::from_bytes(&empty[..24]).is_ok());
}

#[test]
fn open_from_path_matches_memory() {
    let bytes = model_bytes();
    let dir = std::env::temp_dir().join(format!("membound-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    let fixtures = model_tensors(1);
    assert_eq!(
        model_writer(&fixtures).write_file(&path).unwrap(),
        bytes.len() as u64
    );
    let file = GgufFile::open(&path).unwrap();
    let mem = GgufFile::from_bytes(&bytes).unwrap();
    assert_eq!(file.source(), path.display().to_string());
    assert_eq!(file.bytes(), bytes.as_slice());
    assert_eq!(file.metadata(), mem.metadata());
    assert_eq!(file.tensors(), mem.tensors());

    // A broken file on disk: the error names the path.
    let broken = dir.join("broken.gguf");
    std::fs::write(&broken, &bytes[..100]).unwrap();
    let e = GgufFile::open(&broken).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{} at byte ", broken.display())),
        "{e}"
    );
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Truncated { what: "magic", .. }),
        "{e}"
    );
    assert_eq!(e.file, empty.display().to_string());
    let missing = dir.join("missing.gguf");
    let e = GgufFile::open(&missing).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)));
    assert!(e.to_string().contains("missing.gguf"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_rejects_bad_input() {
    let mut w = GgufWriter::new();
    w.add_meta("k", 1u8).unwrap();
    assert!(matches!(w.add_meta("k", 2u8), Err(WriteError::DuplicateKey(k)) if k == "k"));
    assert!(matches!(
        w.add_meta("general.alignment", 48u32),
        Err(WriteError::BadAlignment(48))
    ));
    assert!(matches!(
        w.add_meta("general.alignment", "32"),
        Err(WriteError::BadAlignment(0))
    ));
    assert!(matches!(
        w.set_alignment(0),
        Err(WriteError::BadAlignment(0))
    ));
    w.add_tensor("a", &[32], DType::Q8_0, vec![0u8; 34])
        .unwrap();
    assert!(matches!(
        w.add_tensor("a", &[32], DType::Q8_0, vec![0u8; 34]),
        Err(WriteError::DuplicateTensor(_))
    ));
    let e = w
        .add_tensor("b", &[32], DType::Q8_0, vec![0u8; 33])
        .unwrap_err();
    assert!(
        matches!(
            e,
            WriteError::BadTensorBytes {
                expected: Some(34),
                got: 33,
                ..
            }
        ),
        "{e}"
    );
    let e = w
        .add_tensor("c", &[16, 2], DType::Q8_0, vec![0u8; 34])
        .unwrap_err();
    assert!(
        matches!(e, WriteError::BadTensorBytes { expected: None, .. }),
        "{e}"
    );
    let e = w
        .add_tensor("d", &[1, 1, 1, 1, 1], DType::F32, vec![0u8; 4])
        .unwrap_err();
    assert!(matches!(e, WriteError::TooManyDims { n_dims: 5, .. }));
    let e = w
        .add_tensor("e", &[4], DType::F8_E4M3, vec![0u8; 4])
        .unwrap_err();
    assert!(matches!(
        e,
        WriteError::NoGgmlId {
            dtype: DType::F8_E4M3,
            ..
        }
    ));
    for dims in [[u64::MAX, 2], [1 << 61, 1]] {
        let e = w.add_tensor("f", &dims, DType::F32, vec![]).unwrap_err();
        assert!(matches!(
            e,
            WriteError::BadTensorBytes { expected: None, .. }
        ));
    }
    // The rejected tensors left no trace.
    let file = GgufFile::from_vec(w.to_bytes().unwrap()).unwrap();
    assert_eq!(file.tensors().len(), 1);
    assert_eq!(file.metadata().len(), 1);
}

// ---------------------------------------------------------------- robustness

#[test]
fn truncated_at_every_point() {
    let bytes = model_bytes();
    let file = GgufFile::from_bytes(&bytes).unwrap();
    let data_end = file
        .tensors()
        .iter()
        .map(|t| file.data_offset() + t.offset + t.n_bytes)
        .max()
        .unwrap() as usize;
    for cut in 0..bytes.len() {
        let result = GgufFile::from_bytes(&bytes[..cut]);
        if cut >= data_end {
            assert!(result.is_ok(), "cut {cut}: only padding was removed");
            continue;
        }
        let e = result.expect_err("truncated file accepted");
        let at = e.offset.unwrap();
        assert!(at <= cut as u64, "cut {cut}: error at {at}");
        match e.kind {
            ErrorKind::Truncated {
                needed, available, ..
            } => {
                assert_eq!(at + available, cut as u64, "cut {cut}");
                assert!(needed > available);
            }
            ErrorKind::LengthTooLarge { .. } => assert!(cut < file.data_offset() as usize),
            ErrorKind::TensorPastEnd { end, file_len, .. } => {
                assert_eq!(file_len, cut as u64);
                assert!(end > file_len);
            }
            other => panic!("cut {cut}: unexpected {other:?}"),
        }
    }
    let e = read_err(bytes[..6].to_vec());
    assert!(matches!(
        e.kind,
        ErrorKind::Truncated {
            what: "version",
            needed: 4,
            available: 2
        }
    ));
    assert_eq!(e.offset, Some(4));
    let e = read_err(Vec::new());
    assert!(matches!(e.kind, ErrorKind::Truncated { what: "magic", .. }));
}

#[test]
fn wrong_magic_and_versions() {
    let mut bytes = model_bytes();
    bytes[3] = b'G';
    let e = read_err(bytes);
    assert!(matches!(e.kind, ErrorKind::BadMagic { found } if &found == b"GGUG"));
    assert_eq!(e.offset, Some(0));

    for (version, big_endian) in [
        (1u32, None),
        (4, None),
        (0x0300_0000, Some(3)),
        (0x0200_0000, Some(2)),
    ] {
        let mut bytes = model_bytes();
        put_u32(&mut bytes, 4, version);
        let e = read_err(bytes);
        assert_eq!(e.offset, Some(4));
        match big_endian {
            Some(v) => assert!(
                matches!(e.kind, ErrorKind::BigEndian { version } if version == v),
                "{e}"
            ),
            None => assert!(
                matches!(e.kind, ErrorKind::UnsupportedVersion(v) if v == version),
                "{e}"
            ),
        }
    }
}

#[test]
fn absurd_counts_and_lengths_fail_before_allocating() {
    let base = model_bytes();
    let cases: [(usize, u64, &str); 5] = [
        (8, u64::MAX, "tensor count"),
        (8, 1 << 40, "tensor count"),
        (16, u64::MAX, "metadata kv count"),
        // Fits alone, but not with the 7 tensor infos of at least 24 bytes each.
        (
            16,
            (base.len() as u64 - 24) / 13 - 5,
            "metadata kv and tensor tables",
        ),
        (24, 1 << 50, "string"),
    ];
    for (at, value, what) in cases {
        let mut bytes = base.clone();
        put_u64(&mut bytes, at, value);
        let e = read_err(bytes);
        assert_eq!(e.offset, Some(at as u64), "{e}");
        assert!(
            matches!(e.kind, ErrorKind::LengthTooLarge { what: w, .. } | ErrorKind::TooMany { what: w, .. } if w == what),
            "{e}"
        );
    }
    // An array of 2^63 u32: needs 2^65 bytes (computed without overflow).
    let mut bytes = base.clone();
    let len_at = find(&bytes, b"head_count_kv") + "head_count_kv".len() + 4 + 4;
    assert_eq!(get_u64(&bytes, len_at), 2);
    put_u64(&mut bytes, len_at, 1 << 63);
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(len_at as u64));
    assert!(
        matches!(e.kind, ErrorKind::LengthTooLarge { what: "array", len, needed, .. } if len == 1 << 63 && needed == 1 << 65)
    );
}

#[test]
fn invalid_utf8_unknown_value_type_and_bad_bool() {
    // Keys and tensor names must be UTF-8.
    let mut bytes = model_bytes();
    let at = find(&bytes, b"general.architecture") + 3;
    bytes[at] = 0xff;
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(at as u64));
    assert!(matches!(e.kind, ErrorKind::InvalidUtf8(_)), "{e}");
    // String values need not be (llama.cpp loads byte-level vocabularies): U+FFFD stands in.
    let mut bytes = model_bytes();
    let at = find(&bytes, b"membound synthetic") + 3;
    bytes[at] = 0xff;
    let f = GgufFile::from_vec(bytes).unwrap();
    assert!(
        f.metadata()
            .iter()
            .any(|(_, v)| v.as_str() == Some("mem\u{fffd}ound synthetic"))
    );

    let mut bytes = model_bytes();
    let type_at = 24 + 8 + "general.architecture".len();
    assert_eq!(
        u32::from_le_bytes(bytes[type_at..type_at + 4].try_into().unwrap()),
        8
    );
    put_u32(&mut bytes, type_at, 13);
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(type_at as u64));
    assert!(matches!(e.kind, ErrorKind::UnknownValueType(13)));

    let mut bytes = all_values_bytes();
    let at = find(&bytes, b"t.bool_true") + "t.bool_true".len() + 4;
    assert_eq!(bytes[at], 1);
    bytes[at] = 2;
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(at as u64));
    assert!(matches!(e.kind, ErrorKind::InvalidBool(2)));
}

#[test]
fn nesting_depth_is_limited() {
    let nest = |levels: usize| {
        let mut a = MetaArray::from(vec![1u8]);
        for _ in 1..levels {
            a = MetaArray::from(vec![a]);
        }
        let mut w = GgufWriter::new();
        w.add_meta("deep", a.clone()).unwrap();
        (w.to_bytes().unwrap(), a)
    };
    let (ok, value) = nest(MAX_NESTING);
    assert_eq!(
        GgufFile::from_vec(ok).unwrap().meta("deep"),
        Some(&MetaValue::Array(value))
    );
    let (bad, _) = nest(MAX_NESTING + 1);
    let e = read_err(bad);
    // Key "deep" (8 + 4 bytes), value type (4), then 12 bytes per array level.
    assert_eq!(e.offset, Some(24 + 12 + 4 + 12 * MAX_NESTING as u64));
    assert!(matches!(
        e.kind,
        ErrorKind::NestingTooDeep { max: MAX_NESTING }
    ));
}

#[test]
fn duplicate_keys_and_tensor_names() {
    let mut bytes = all_values_bytes();
    let at = find(&bytes, b"t.i8");
    bytes[at..at + 4].copy_from_slice(b"t.u8");
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(at as u64 - 8));
    assert!(matches!(&e.kind, ErrorKind::DuplicateKey(k) if k == "t.u8"));

    let mut bytes = model_bytes();
    let f = locate_tensor(&bytes, "blk.1.attn_k.weight");
    bytes[f.name_len + 8..f.n_dims].copy_from_slice(b"blk.0.attn_q.weight");
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(f.name_len as u64));
    assert!(matches!(&e.kind, ErrorKind::DuplicateTensor(n) if n == "blk.0.attn_q.weight"));
}

#[test]
fn bad_tensor_infos() {
    let base = model_bytes();
    let q = locate_tensor(&base, "blk.0.attn_q.weight");

    let mut bytes = base.clone();
    put_u32(&mut bytes, q.ggml_type, 31);
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(q.ggml_type as u64));
    assert_eq!(
        e.to_string(),
        format!(
            "<memory> at byte {}: unknown ggml type id 31 for tensor blk.0.attn_q.weight",
            q.ggml_type
        )
    );

    let mut bytes = base.clone();
    put_u32(&mut bytes, q.n_dims, 5);
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(q.n_dims as u64));
    assert!(matches!(e.kind, ErrorKind::TooManyDims { n_dims: 5, .. }));

    // Q8_0 rows of 48 values: not whole blocks of 32.
    let mut bytes = base.clone();
    put_u64(&mut bytes, q.dims, 48);
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(q.dims as u64));
    assert!(
        matches!(
            e.kind,
            ErrorKind::NotBlockMultiple {
                dtype: DType::Q8_0,
                row: 48,
                block: 32,
                ..
            }
        ),
        "{e}"
    );
    // Same element count as [256, 8], but rows of 128 are half a Q4_K super-block.
    let mut bytes = base.clone();
    let t = locate_tensor(&bytes, "token_embd.weight");
    put_u64(&mut bytes, t.dims, 128);
    put_u64(&mut bytes, t.dims + 8, 16);
    let e = read_err(bytes);
    assert!(
        matches!(
            e.kind,
            ErrorKind::NotBlockMultiple {
                dtype: DType::Q4_K,
                row: 128,
                block: 256,
                ..
            }
        ),
        "{e}"
    );

    for huge in [1u64 << 62, u64::MAX, 1 << 58] {
        let mut bytes = base.clone();
        put_u64(&mut bytes, q.dims + 8, huge);
        let e = read_err(bytes);
        assert_eq!(e.offset, Some(q.dims as u64));
        assert!(
            matches!(&e.kind, ErrorKind::DimsOverflow { dims, .. } if dims[1] == huge),
            "{e}"
        );
    }
    // 2^61 F32 values: the count fits in i64, the 2^63 bytes do not.
    let mut bytes = base.clone();
    let norm = locate_tensor(&bytes, "blk.0.attn_norm.weight");
    put_u64(&mut bytes, norm.dims, 1 << 61);
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(norm.dims as u64));
    assert!(
        matches!(&e.kind, ErrorKind::DimsOverflow { name, .. } if name == "blk.0.attn_norm.weight"),
        "{e}"
    );
}

#[test]
fn bad_tensor_placement() {
    let base = model_bytes();
    let q = locate_tensor(&base, "blk.0.attn_q.weight");
    let q_offset = get_u64(&base, q.offset);
    let up = locate_tensor(&base, "blk.0.ffn_up.weight");

    let mut bytes = base.clone();
    put_u64(&mut bytes, q.offset, q_offset + 1);
    let e = read_err(bytes);
    assert_eq!(e.offset, Some(q.offset as u64));
    assert!(
        matches!(e.kind, ErrorKind::MisalignedTensor { offset, alignment: 32, .. } if offset == q_offset + 1)
    );

    for shift in [0, 32, 1024] {
        let mut bytes = base.clone();
        put_u64(&mut bytes, up.offset, q_offset + shift);
        let e = read_err(bytes);
        assert_eq!(e.offset, Some(up.offset as u64));
        assert!(
            matches!(&e.kind, ErrorKind::OverlappingTensors { first, second }
                if first == "blk.0.attn_q.weight" && second == "blk.0.ffn_up.weight"),
            "{e}"
        );
    }

    // Data past the end: the last tensor's data cut by one byte, and an offset near u64::MAX.
    let file = GgufFile::from_bytes(&base).unwrap();
    let last = file.tensors().last().unwrap();
    let end = file.data_offset() + last.offset + last.n_bytes;
    let out = locate_tensor(&base, "output.weight");
    let e = read_err(base[..end as usize - 1].to_vec());
    assert_eq!(e.offset, Some(out.offset as u64));
    assert!(
        matches!(&e.kind, ErrorKind::TensorPastEnd { name, end: e_end, file_len, .. }
        if name == "output.weight" && *e_end == end && *file_len == end - 1)
    );
    let mut bytes = base.clone();
    put_u64(&mut bytes, out.offset, u64::MAX - 31);
    let e = read_err(bytes);
    assert!(
        matches!(e.kind, ErrorKind::TensorPastEnd { end: u64::MAX, .. }),
        "{e}"
    );
}

#[test]
fn bad_alignment_values() {
    for bad in [0u32, 48, 3] {
        let mut w = GgufWriter::new();
        w.set_alignment(64).unwrap();
        let mut bytes = w.to_bytes().unwrap();
        let value_at = find(&bytes, b"general.alignment") + "general.alignment".len() + 4;
        assert_eq!(
            u32::from_le_bytes(bytes[value_at..value_at + 4].try_into().unwrap()),
            64
        );
        put_u32(&mut bytes, value_at, bad);
        let e = read_err(bytes);
        assert_eq!(e.offset, Some(value_at as u64));
        assert!(
            matches!(&e.kind, ErrorKind::BadAlignment(v) if v == &format!("U32({bad})")),
            "{e}"
        );
    }
    let mut w = GgufWriter::new();
    w.add_meta("general.alignment", 64i32).unwrap();
    assert_eq!(
        GgufFile::from_vec(w.to_bytes().unwrap())
            .unwrap()
            .alignment(),
        64
    );
}

#[test]
fn only_regular_files_are_opened() {
    let dir = std::env::temp_dir().join(format!("membound-gguf-special-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut paths = vec![dir.clone(), "/dev/zero".into(), "/dev/null".into()];
    let fifo = dir.join("fifo.gguf");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        paths.push(fifo);
    }
    for path in paths {
        if !path.exists() {
            continue;
        }
        // A FIFO would block here forever if it were opened.
        let e = GgufFile::open(&path).unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::NotRegularFile),
            "{}: {e}",
            path.display()
        );
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tensor_counts_and_names_are_bounded() {
    // Zero-size tensors cost no data bytes: only the count bounds them.
    let mut w = GgufWriter::new();
    for i in 0..=MAX_TENSORS {
        w.add_tensor(&format!("t{i}"), &[0], DType::F32, vec![])
            .unwrap();
    }
    let e = read_err(w.to_bytes().unwrap());
    assert!(
        matches!(e.kind, ErrorKind::TooMany { what: "tensor count", count, .. } if count == MAX_TENSORS + 1),
        "{e}"
    );
    // ggml's GGML_MAX_NAME is 64 with the NUL: 63 bytes pass, 64 do not.
    for (len, ok) in [(63, true), (64, false)] {
        let mut w = GgufWriter::new();
        w.add_f32(&"n".repeat(len), &[1], &[1.0]).unwrap();
        let r = GgufFile::from_vec(w.to_bytes().unwrap());
        assert_eq!(r.is_ok(), ok, "{len}");
        if let Err(e) = r {
            assert!(
                matches!(e.kind, ErrorKind::NameTooLong { len: 64, max: 63 }),
                "{e}"
            );
        }
    }
}

/// A deferred tensor is made when written, lands where a held one would, and a producer that
/// makes the wrong number of bytes fails the write naming the tensor.
#[test]
fn deferred_tensors_are_made_at_write_time_and_checked() {
    let values = [1.0f32, 2.0, 3.0, 4.0];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut held = GgufWriter::new();
    held.add_tensor("t", &[4], DType::F32, bytes.clone())
        .unwrap();
    let mut deferred = GgufWriter::new();
    let made = bytes.clone();
    deferred
        .add_tensor_deferred("t", &[4], DType::F32, move || Ok(made.clone()))
        .unwrap();
    assert_eq!(deferred.file_size(), held.to_bytes().unwrap().len() as u64);
    assert_eq!(deferred.to_bytes().unwrap(), held.to_bytes().unwrap());
    let mut short = GgufWriter::new();
    short
        .add_tensor_deferred("short", &[4], DType::F32, || Ok(vec![0; 12]))
        .unwrap();
    let e = short.to_bytes().unwrap_err().to_string();
    assert!(e.contains("short") && e.contains("got 12"), "{e}");
}
