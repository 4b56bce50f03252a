//! [`HostStep`]: a whole decode step's launch plan (`membound_cuda::decode::step_launches`, the
//! plan a GPU runs) executed by the host build of the kernels.

use std::collections::BTreeMap;

use membound_cuda::CudaError;
use membound_cuda::decode::{
    Buf, StepArg, StepDesc, StepExec, StepLaunch, initial_data, scratch_buffers,
};

use crate::exec::{Named, launch_named};
use crate::{Arg, HostBuffer, HostError};

/// A step's buffers in host memory.
pub struct HostStep {
    bufs: BTreeMap<Buf, HostBuffer>,
}

impl HostStep {
    /// Takes `weights` and the step's initial data and allocates (zeroed) every other buffer
    /// `launches` name.
    pub fn new(
        d: &StepDesc,
        weights: &[(Buf, Vec<u8>)],
        launches: &[StepLaunch],
    ) -> Result<HostStep, HostError> {
        let mut bufs: BTreeMap<Buf, HostBuffer> = weights
            .iter()
            .chain(&initial_data(d))
            .map(|(b, bytes)| (*b, HostBuffer::from_slice(bytes)))
            .collect();
        for (b, n) in scratch_buffers(d, launches).map_err(|e| HostError(e.to_string()))? {
            bufs.entry(b).or_insert_with(|| HostBuffer::zeroed(n));
        }
        Ok(HostStep { bufs })
    }

    /// Overwrites buffer `b` (the embedded token into [`Buf::Embd`]).
    pub fn write(&mut self, b: Buf, bytes: &[u8]) -> Result<(), HostError> {
        let h = self
            .bufs
            .get_mut(&b)
            .ok_or_else(|| HostError(format!("{b:?} is not allocated")))?;
        if h.len_bytes() != bytes.len() {
            return Err(HostError(format!(
                "{b:?} holds {} bytes, not {}",
                h.len_bytes(),
                bytes.len()
            )));
        }
        h.bytes_mut().copy_from_slice(bytes);
        Ok(())
    }

    /// Runs `launches` in order.
    pub fn run(&mut self, launches: &[StepLaunch]) -> Result<(), HostError> {
        for l in launches {
            let args = l
                .args
                .iter()
                .map(|a| match a {
                    StepArg::In(b) => Named::In(*b),
                    StepArg::Out(b) => Named::Out(*b),
                    StepArg::Gemv(p) => Named::Value(Arg::value(p)),
                    StepArg::Quantize(p) => Named::Value(Arg::value(p)),
                    StepArg::Moe(p) => Named::Value(Arg::value(p)),
                    StepArg::Attn(p) => Named::Value(Arg::value(p)),
                    StepArg::Dec(p) => Named::Value(Arg::value(p)),
                    StepArg::Stream(p) => Named::Value(Arg::value(p)),
                })
                .collect();
            launch_named(&mut self.bufs, l.kernel.name(), l.config, args)?;
        }
        Ok(())
    }

    /// Buffer `b` as values of `T`.
    pub fn read<T: crate::buffer::Plain>(&self, b: Buf) -> Result<Vec<T>, HostError> {
        self.bufs
            .get(&b)
            .map(|h| h.to_vec())
            .ok_or_else(|| HostError(format!("{b:?} is not allocated")))
    }
}

impl StepExec for HostStep {
    fn write(&mut self, b: Buf, bytes: &[u8]) -> Result<(), CudaError> {
        HostStep::write(self, b, bytes).map_err(host_error)
    }

    fn run(&mut self, launches: &[StepLaunch]) -> Result<(), CudaError> {
        HostStep::run(self, launches).map_err(host_error)
    }

    fn read(&mut self, b: Buf) -> Result<Vec<u8>, CudaError> {
        HostStep::read(self, b).map_err(host_error)
    }
}

fn host_error(e: HostError) -> CudaError {
    CudaError::InvalidArgument {
        op: "host kernels",
        reason: e.0,
    }
}
