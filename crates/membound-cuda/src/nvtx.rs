//! NVTX ranges around kernel launches, for Nsight Systems / Compute. CUDA 12.9+ and 13 ship no
//! `libnvToolsExt` (NVTX3 is header-only); the toolkit's `libnvtx3interop` exports the same C
//! entry points for callers that cannot use the headers. Whichever loads first is used; with
//! neither, ranges are off and [`Nvtx::load`] says why.

use std::ffi::{CStr, c_char, c_int};

type Push = unsafe extern "C" fn(*const c_char) -> c_int;
type Pop = unsafe extern "C" fn() -> c_int;

/// Library names tried, in order.
pub const LIBRARIES: [&str; 4] = [
    "libnvToolsExt.so.1",
    "libnvToolsExt.so",
    "libnvtx3interop.so.1",
    "libnvtx3interop.so",
];

/// A loaded NVTX library.
pub struct Nvtx {
    _lib: libloading::Library,
    push: Push,
    pop: Pop,
    /// The library that was loaded.
    pub library: &'static str,
}

impl Nvtx {
    /// The first of [`LIBRARIES`] that loads and has `nvtxRangePushA` / `nvtxRangePop`, or the
    /// reason none did.
    pub fn load() -> Result<Nvtx, String> {
        let mut why = Vec::new();
        for name in LIBRARIES {
            // SAFETY: loading an NVTX library runs no initialisers with preconditions; the two
            // symbols are taken with their documented C signatures.
            let loaded = unsafe {
                libloading::Library::new(name).and_then(|lib| {
                    let push = *lib.get::<Push>(b"nvtxRangePushA\0")?;
                    let pop = *lib.get::<Pop>(b"nvtxRangePop\0")?;
                    Ok((lib, push, pop))
                })
            };
            match loaded {
                Ok((lib, push, pop)) => {
                    return Ok(Nvtx {
                        _lib: lib,
                        push,
                        pop,
                        library: name,
                    });
                }
                Err(e) => why.push(format!("{name}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    /// Opens a range named `name`; it closes when the guard drops.
    pub fn range(&self, name: &CStr) -> Range<'_> {
        // SAFETY: `name` is NUL-terminated and outlives the call; push has no other precondition.
        unsafe { (self.push)(name.as_ptr()) };
        Range(self)
    }
}

/// An open NVTX range.
pub struct Range<'a>(&'a Nvtx);

impl Drop for Range<'_> {
    fn drop(&mut self) {
        // SAFETY: pops the range this guard pushed.
        unsafe { (self.0.pop)() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_never_panics_and_explains() {
        match Nvtx::load() {
            Ok(n) => {
                assert!(LIBRARIES.contains(&n.library));
                drop(n.range(c"membound-test"));
            }
            Err(why) => {
                for lib in LIBRARIES {
                    assert!(why.contains(lib), "{why}");
                }
            }
        }
    }
}
