//! Metadata values: [`ValueType`] (GGUF's type ids), [`MetaValue`] (one value) and
//! [`MetaArray`] (a typed array, so numeric arrays cost exactly their bytes in memory).

use std::fmt;

/// A GGUF metadata value type, with its on-disk id (`gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// 0
    U8,
    /// 1
    I8,
    /// 2
    U16,
    /// 3
    I16,
    /// 4
    U32,
    /// 5
    I32,
    /// 6
    F32,
    /// 7: one byte, 0 or 1.
    Bool,
    /// 8: u64 length, then UTF-8 bytes (no terminator).
    String,
    /// 9: u32 element type, u64 length, then the elements.
    Array,
    /// 10
    U64,
    /// 11
    I64,
    /// 12
    F64,
}

/// `(type, name)`, indexed by on-disk id.
const VALUE_TYPES: [(ValueType, &str); 13] = [
    (ValueType::U8, "u8"),
    (ValueType::I8, "i8"),
    (ValueType::U16, "u16"),
    (ValueType::I16, "i16"),
    (ValueType::U32, "u32"),
    (ValueType::I32, "i32"),
    (ValueType::F32, "f32"),
    (ValueType::Bool, "bool"),
    (ValueType::String, "string"),
    (ValueType::Array, "array"),
    (ValueType::U64, "u64"),
    (ValueType::I64, "i64"),
    (ValueType::F64, "f64"),
];

impl ValueType {
    /// The type with this on-disk id.
    pub fn from_id(id: u32) -> Option<ValueType> {
        VALUE_TYPES.get(id as usize).map(|row| row.0)
    }

    /// The on-disk id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The smallest number of bytes one value of this type occupies on disk (v2/v3): the fixed
    /// size of scalars, the length prefix of strings, type + length of arrays.
    pub fn min_disk_size(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(VALUE_TYPES[*self as usize].1)
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// One `u8`.
    U8(u8),
    /// One `i8`.
    I8(i8),
    /// One `u16`.
    U16(u16),
    /// One `i16`.
    I16(i16),
    /// One `u32`.
    U32(u32),
    /// One `i32`.
    I32(i32),
    /// One `f32`.
    F32(f32),
    /// One `bool`.
    Bool(bool),
    /// One `string`.
    String(String),
    /// An array.
    Array(MetaArray),
    /// One `u64`.
    U64(u64),
    /// One `i64`.
    I64(i64),
    /// One `f64`.
    F64(f64),
}

/// A metadata array: every element has the same type. Nested arrays are arrays of arrays,
/// each inner array keeping its own element type (even when empty).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    /// Elements of type `u8`.
    U8(Vec<u8>),
    /// Elements of type `i8`.
    I8(Vec<i8>),
    /// Elements of type `u16`.
    U16(Vec<u16>),
    /// Elements of type `i16`.
    I16(Vec<i16>),
    /// Elements of type `u32`.
    U32(Vec<u32>),
    /// Elements of type `i32`.
    I32(Vec<i32>),
    /// Elements of type `f32`.
    F32(Vec<f32>),
    /// Elements of type `bool`.
    Bool(Vec<bool>),
    /// Elements of type `string`.
    String(Vec<String>),
    /// Arrays (a nested array).
    Array(Vec<MetaArray>),
    /// Elements of type `u64`.
    U64(Vec<u64>),
    /// Elements of type `i64`.
    I64(Vec<i64>),
    /// Elements of type `f64`.
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any [`MetaArray`] variant (bound to `$v`).
macro_rules! with_array {
    ($arr:expr, $v:ident => $body:expr) => {
        match $arr {
            MetaArray::U8($v) => $body,
            MetaArray::I8($v) => $body,
            MetaArray::U16($v) => $body,
            MetaArray::I16($v) => $body,
            MetaArray::U32($v) => $body,
            MetaArray::I32($v) => $body,
            MetaArray::F32($v) => $body,
            MetaArray::Bool($v) => $body,
            MetaArray::String($v) => $body,
            MetaArray::Array($v) => $body,
            MetaArray::U64($v) => $body,
            MetaArray::I64($v) => $body,
            MetaArray::F64($v) => $body,
        }
    };
}

/// `From` conversions for scalars, for `Vec`s of them, and the numeric-width helpers.
macro_rules! conversions {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(
            impl From<$ty> for MetaValue {
                fn from(v: $ty) -> Self {
                    MetaValue::$variant(v)
                }
            }
            impl From<Vec<$ty>> for MetaArray {
                fn from(v: Vec<$ty>) -> Self {
                    MetaArray::$variant(v)
                }
            }
            impl From<Vec<$ty>> for MetaValue {
                fn from(v: Vec<$ty>) -> Self {
                    MetaValue::Array(MetaArray::$variant(v))
                }
            }
        )*

        impl MetaArray {
            /// The `i`-th element as a value (cloned), `None` past the end.
            pub fn get(&self, i: usize) -> Option<MetaValue> {
                match self {
                    $(MetaArray::$variant(v) => v.get(i).cloned().map(MetaValue::$variant),)*
                    MetaArray::String(v) => v.get(i).cloned().map(MetaValue::String),
                    MetaArray::Array(v) => v.get(i).cloned().map(MetaValue::Array),
                }
            }

            /// The element type.
            pub fn elem_type(&self) -> ValueType {
                match self {
                    $(MetaArray::$variant(_) => ValueType::$variant,)*
                    MetaArray::String(_) => ValueType::String,
                    MetaArray::Array(_) => ValueType::Array,
                }
            }
        }

        impl MetaValue {
            /// The value's type.
            pub fn value_type(&self) -> ValueType {
                match self {
                    $(MetaValue::$variant(_) => ValueType::$variant,)*
                    MetaValue::String(_) => ValueType::String,
                    MetaValue::Array(_) => ValueType::Array,
                }
            }
        }
    };
}

conversions!(
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
);

impl From<String> for MetaValue {
    fn from(v: String) -> Self {
        MetaValue::String(v)
    }
}

impl From<&str> for MetaValue {
    fn from(v: &str) -> Self {
        MetaValue::String(v.to_string())
    }
}

impl From<MetaArray> for MetaValue {
    fn from(v: MetaArray) -> Self {
        MetaValue::Array(v)
    }
}

impl From<Vec<String>> for MetaArray {
    fn from(v: Vec<String>) -> Self {
        MetaArray::String(v)
    }
}

impl From<Vec<&str>> for MetaArray {
    fn from(v: Vec<&str>) -> Self {
        MetaArray::String(v.into_iter().map(str::to_string).collect())
    }
}

impl From<Vec<MetaArray>> for MetaArray {
    fn from(v: Vec<MetaArray>) -> Self {
        MetaArray::Array(v)
    }
}

/// `Vec<String>`, `Vec<&str>` and `Vec<MetaArray>` into a [`MetaValue::Array`].
macro_rules! array_value {
    ($($ty:ty),*) => {$(
        impl From<Vec<$ty>> for MetaValue {
            fn from(v: Vec<$ty>) -> Self {
                MetaValue::Array(v.into())
            }
        }
    )*};
}
array_value!(String, &str, MetaArray);

impl MetaValue {
    /// An unsigned integer of any width, or a non-negative signed one.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// [`MetaValue::as_u64`] narrowed to `usize` when it fits.
    pub fn as_usize(&self) -> Option<usize> {
        self.as_u64().and_then(|v| usize::try_from(v).ok())
    }

    /// A signed integer of any width, or an unsigned one that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// An `f32` or `f64` as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// An `f32`, or an `f64` rounded to `f32`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// A bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(v) => Some(v),
            _ => None,
        }
    }

    /// An array.
    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

impl MetaArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        with_array!(self, v => v.len())
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as values (cloned), in order.
    pub fn iter(&self) -> impl Iterator<Item = MetaValue> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Every element as `u64` ([`MetaValue::as_u64`]); `None` if any is not a non-negative
    /// integer. Per-layer hyperparameters (e.g. `head_count_kv` of hybrid models) are such arrays.
    pub fn to_u64_vec(&self) -> Option<Vec<u64>> {
        self.iter().map(|v| v.as_u64()).collect()
    }

    /// Every element as `i64` ([`MetaValue::as_i64`]); `None` if any is not an integer.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        self.iter().map(|v| v.as_i64()).collect()
    }

    /// Every element as `f64` ([`MetaValue::as_f64`]); `None` if any is not a float.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        self.iter().map(|v| v.as_f64()).collect()
    }

    /// The strings of a string array.
    pub fn as_strs(&self) -> Option<&[String]> {
        match self {
            MetaArray::String(v) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip() {
        for id in 0..13 {
            let t = ValueType::from_id(id).unwrap();
            assert_eq!(t.id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(ValueType::Array.id(), 9);
        assert_eq!(ValueType::F64.id(), 12);
        assert_eq!(ValueType::Bool.to_string(), "bool");
    }

    #[test]
    fn integer_getters_accept_any_width() {
        assert_eq!(MetaValue::U8(7).as_u64(), Some(7));
        assert_eq!(MetaValue::I32(7).as_u64(), Some(7));
        assert_eq!(MetaValue::I32(-7).as_u64(), None);
        assert_eq!(MetaValue::I16(-7).as_i64(), Some(-7));
        assert_eq!(MetaValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(MetaValue::U64(1 << 40).as_i64(), Some(1 << 40));
        assert_eq!(MetaValue::F32(1.5).as_u64(), None);
        assert_eq!(MetaValue::F32(1.5).as_f64(), Some(1.5));
        assert_eq!(MetaValue::F64(0.25).as_f32(), Some(0.25));
        assert_eq!(MetaValue::from("x").as_str(), Some("x"));
        assert_eq!(MetaValue::Bool(true).as_bool(), Some(true));
        assert_eq!(MetaValue::Bool(true).as_u64(), None);
    }

    #[test]
    fn arrays_convert_and_index() {
        let a = MetaValue::from(vec![1u16, 2, 3]);
        let arr = a.as_array().unwrap();
        assert_eq!(arr.elem_type(), ValueType::U16);
        assert_eq!(arr.len(), 3);
        assert_eq!(arr.get(2), Some(MetaValue::U16(3)));
        assert_eq!(arr.get(3), None);
        assert_eq!(arr.to_u64_vec(), Some(vec![1, 2, 3]));
        assert_eq!(MetaArray::from(vec![-1i8]).to_u64_vec(), None);
        assert_eq!(MetaArray::from(vec![-1i8]).to_i64_vec(), Some(vec![-1]));
        let s = MetaValue::from(vec!["a", "b"]);
        assert_eq!(s.as_array().unwrap().as_strs().unwrap(), ["a", "b"]);
        let nested = MetaArray::from(vec![MetaArray::from(vec![1.0f32]), MetaArray::F64(vec![])]);
        assert_eq!(nested.elem_type(), ValueType::Array);
        assert_eq!(
            nested.get(1),
            Some(MetaValue::Array(MetaArray::F64(vec![])))
        );
        assert_eq!(nested.to_f64_vec(), None);
    }
}
