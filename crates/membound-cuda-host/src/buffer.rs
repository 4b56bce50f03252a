//! [`HostBuffer`]: "device memory" for host launches: 256-byte aligned like `cuMemAlloc`, with
//! guard bytes before and after that a launch checks (a kernel writing past its output fails).

/// Guard bytes on each side of a buffer.
const GUARD: usize = 256;
/// Alignment of the data (cuMemAlloc gives at least 256 bytes).
const ALIGN: usize = 256;
/// Byte the guards and fresh memory hold.
const POISON: u8 = 0xA5;

/// A buffer the kernels read and write on the host.
pub struct HostBuffer {
    mem: Vec<u8>,
    off: usize,
    len: usize,
}

/// Plain values that can be viewed as bytes and made from any bytes.
///
/// # Safety
/// Implementors have no padding and every bit pattern is a valid value.
pub unsafe trait Plain: Copy + 'static {}
// SAFETY: primitive numbers have no padding and accept every bit pattern.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for i8 {}
// SAFETY: as above.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for i32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for f32 {}

impl HostBuffer {
    /// `bytes` zeroed bytes.
    pub fn zeroed(bytes: usize) -> HostBuffer {
        let mut b = HostBuffer::poisoned(bytes);
        b.bytes_mut().fill(0);
        b
    }

    /// `bytes` bytes holding a poison pattern (0xA5), so a kernel that leaves an output element
    /// unwritten is caught by the comparison with the reference.
    pub fn poisoned(bytes: usize) -> HostBuffer {
        let mem = vec![POISON; bytes + 2 * GUARD + ALIGN];
        let base = mem.as_ptr() as usize + GUARD;
        let off = GUARD + (base.next_multiple_of(ALIGN) - base);
        HostBuffer {
            mem,
            off,
            len: bytes,
        }
    }

    /// A buffer holding `data`.
    pub fn from_slice<T: Plain>(data: &[T]) -> HostBuffer {
        let bytes = std::mem::size_of_val(data);
        let mut b = HostBuffer::poisoned(bytes);
        // SAFETY: T is Plain (no padding), so its values are `bytes` initialised bytes.
        let src = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), bytes) };
        b.bytes_mut().copy_from_slice(src);
        b
    }

    /// The contents as `T`s (the length must be a whole number of `T`).
    pub fn to_vec<T: Plain>(&self) -> Vec<T> {
        let n = self.len / std::mem::size_of::<T>();
        let mut out = Vec::<T>::with_capacity(n);
        // SAFETY: T is Plain (any bit pattern is valid); n * size_of::<T>() <= len bytes are
        // copied into the vector's capacity, then the length is set.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.as_ptr(),
                out.as_mut_ptr().cast::<u8>(),
                n * std::mem::size_of::<T>(),
            );
            out.set_len(n);
        }
        out
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.mem[self.off..self.off + self.len]
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.off..self.off + self.len]
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.bytes().as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.bytes_mut().as_mut_ptr()
    }

    /// Checks the guard bytes on both sides.
    pub fn check_guards(&self) -> Result<(), String> {
        let before = &self.mem[..self.off];
        let after = &self.mem[self.off + self.len..];
        if let Some(i) = before.iter().rposition(|&b| b != POISON) {
            return Err(format!(
                "wrote {} bytes before the start of a {}-byte buffer",
                self.off - i,
                self.len
            ));
        }
        if let Some(i) = after.iter().position(|&b| b != POISON) {
            return Err(format!(
                "wrote at byte {} past the end of a {}-byte buffer",
                i, self.len
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_guarded_and_round_trips() {
        for n in [0usize, 1, 3, 255, 256, 1000] {
            let v: Vec<u32> = (0..n as u32).collect();
            let b = HostBuffer::from_slice(&v);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.to_vec::<u32>(), v);
            assert!(b.check_guards().is_ok());
        }
        let mut b = HostBuffer::zeroed(8);
        b.mem[b.off + 8] = 0;
        assert!(b.check_guards().unwrap_err().contains("past the end"));
        let mut b = HostBuffer::zeroed(8);
        b.mem[b.off - 1] = 0;
        assert!(b.check_guards().unwrap_err().contains("before the start"));
    }
}
