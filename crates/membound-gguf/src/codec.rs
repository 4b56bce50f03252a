//! Little-endian encoding of the fixed-size numbers GGUF stores, shared by reader and writer.

/// A number stored little-endian in `SIZE` bytes.
pub(crate) trait Le: Copy {
    /// Bytes on disk.
    const SIZE: usize;
    /// Decodes from exactly `SIZE` bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Appends the `SIZE` bytes.
    fn write(self, out: &mut Vec<u8>);
}

macro_rules! le {
    ($($ty:ty),*) => {$(
        impl Le for $ty {
            const SIZE: usize = std::mem::size_of::<$ty>();
            fn read(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$ty>()];
                buf.copy_from_slice(bytes);
                <$ty>::from_le_bytes(buf)
            }
            fn write(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);
