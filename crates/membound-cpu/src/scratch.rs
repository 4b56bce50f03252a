//! Buffers a kernel keeps from call to call, so a warm decode step allocates nothing.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A value reused by every call of its owner (a GEMV's quantized activations, an attention
/// cache's partial results, a MoE layer's routing): behind a lock so `&self` calls can fill it,
/// and fresh in a clone (a clone shares no buffers).
#[derive(Debug, Default)]
pub(crate) struct Reuse<T>(Mutex<T>);

impl<T: Default> Clone for Reuse<T> {
    fn clone(&self) -> Self {
        Reuse::default()
    }
}

impl<T> Reuse<T> {
    /// The value. A lock poisoned by a panicking call is taken as it is: every user rewrites
    /// what it reads.
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `v` as `n` zeros, within its capacity once it has held `n` values.
pub(crate) fn zeroed<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> &mut [T] {
    v.clear();
    v.resize(n, T::default());
    v
}
