//! The crate's error type: every CUDA, NVRTC and cuBLAS failure, naming the device, the kernel
//! or file and the operation.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;

/// A failure of the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No usable driver or device (the reason is one line, as [`crate::probe`] reports it).
    #[error("CUDA unavailable: {0}")]
    Unavailable(String),
    /// A driver call failed.
    #[error("{device}: {op}: {source}")]
    Driver {
        /// The device, e.g. `gpu0 (NVIDIA H100 80GB HBM3, sm_90)`.
        device: String,
        /// What was being done, naming the kernel where there is one.
        op: String,
        /// The driver's error code.
        #[source]
        source: DriverError,
    },
    /// libnvrtc could not be loaded or used.
    #[error("NVRTC unavailable: {0}")]
    NvrtcUnavailable(String),
    /// An NVRTC call other than the compilation itself failed.
    #[error("NVRTC {op} for {file} ({arch}): {code}")]
    Nvrtc {
        /// The NVRTC call.
        op: &'static str,
        /// The kernel file.
        file: String,
        /// The target, e.g. `sm_90`.
        arch: String,
        /// NVRTC's result code.
        code: String,
    },
    /// A kernel file failed to compile; `log` is NVRTC's program log.
    #[error("NVRTC failed to compile {file} for {arch} ({code}); options {options:?}; log:\n{log}")]
    Compile {
        /// The kernel file.
        file: String,
        /// The target, e.g. `sm_90`.
        arch: String,
        /// NVRTC's result code.
        code: String,
        /// The options passed to NVRTC.
        options: Vec<String>,
        /// The program log.
        log: String,
    },
    /// A cuBLAS call failed or cuBLAS is not installed.
    #[error("{device}: cuBLAS {op}: {reason}")]
    Cublas {
        /// The device.
        device: String,
        /// The cuBLAS operation.
        op: String,
        /// The error code or why cuBLAS is unavailable.
        reason: String,
    },
    /// A call was refused before reaching the device (shapes, lengths, types).
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The refused operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// Host-side quantization of data to upload failed.
    #[error("host quantization: {0}")]
    Quant(#[from] membound_quant::ops::QuantError),
}

impl CudaError {
    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn cublas(device: &str, op: &str, e: CublasError) -> Self {
        Self::Cublas {
            device: device.to_owned(),
            op: op.to_owned(),
            reason: format!("{e:?}"),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// Runs `f`, turning a panic (cudarc panics when a dynamically loaded library or symbol is
/// missing) into `Err` with the panic message.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        }
    })
}
