//! [`HostMoe`]: one MoE layer's launch plan (`membound_cuda::moe::moe_launches`, the plan a GPU
//! runs) executed by the host build of the kernels, with each launch's load figures.

use std::collections::BTreeMap;

use membound_cuda::Kernel;
use membound_cuda::moe::{
    ALL_BUFS, MoeArg, MoeBuf, MoeInput, MoeLaunch, buffer_bytes, check_inputs, check_weights,
    moe_launches, shared_plan, starts_zeroed,
};
use membound_spec::moe::MoeLayer;

use crate::exec::{Named, launch_named};
use crate::{Arg, HostBuffer, HostError, LoadStats};

/// One MoE layer for batches of a fixed size, in host buffers (scratch poisoned, so a value a
/// kernel should have written and did not is caught by the comparison with the reference).
pub struct HostMoe {
    layer: MoeLayer,
    tokens: usize,
    steer: bool,
    launches: Vec<MoeLaunch>,
    bufs: BTreeMap<MoeBuf, HostBuffer>,
    inputs: Vec<(Vec<f32>, Vec<f32>)>,
}

fn err(e: membound_cuda::CudaError) -> HostError {
    HostError(e.to_string())
}

impl HostMoe {
    /// The layer's weights (`membound_cuda::moe::weight_bufs`) and scratch for batches of
    /// `tokens` (with a steering input when `steer`).
    pub fn new(
        layer: &MoeLayer,
        weights: &[(MoeBuf, std::borrow::Cow<'_, [u8]>)],
        tokens: usize,
        steer: bool,
    ) -> Result<HostMoe, HostError> {
        let launches = moe_launches(layer, tokens, steer).map_err(err)?;
        check_weights(layer, weights).map_err(err)?;
        let mut bufs: BTreeMap<MoeBuf, HostBuffer> = weights
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(k, b)| (*k, HostBuffer::from_slice(b)))
            .collect();
        for b in ALL_BUFS {
            let n = buffer_bytes(layer, tokens, b);
            if n > 0 && !bufs.contains_key(&b) {
                let buf = if starts_zeroed(b) {
                    HostBuffer::zeroed(n)
                } else {
                    HostBuffer::poisoned(n)
                };
                bufs.insert(b, buf);
            }
        }
        if layer.shared_ff > 0 {
            bufs.insert(
                MoeBuf::SharedPlan,
                HostBuffer::from_slice(&shared_plan(tokens)),
            );
        }
        Ok(HostMoe {
            layer: layer.clone(),
            tokens,
            steer,
            launches,
            bufs,
            inputs: Vec::new(),
        })
    }

    /// Sets the input slots [`HostMoe::forward`] chooses from (batches and their steering).
    pub fn set_inputs(&mut self, inputs: &[MoeInput<'_>]) -> Result<(), HostError> {
        check_inputs(&self.layer, self.tokens, self.steer, inputs)
            .map_err(|e| HostError(e.to_string()))?;
        self.inputs = inputs
            .iter()
            .map(|(x, s)| (x.to_vec(), s.to_vec()))
            .collect();
        Ok(())
    }

    /// Runs the launches in order on input slot `slot`; returns each launch's kernel and load
    /// figures.
    pub fn forward(&mut self, slot: usize) -> Result<Vec<(Kernel, LoadStats)>, HostError> {
        let (xs, st) = self
            .inputs
            .get(slot)
            .ok_or_else(|| HostError(format!("no input slot {slot}")))?;
        self.bufs.insert(MoeBuf::X, HostBuffer::from_slice(xs));
        if self.steer {
            self.bufs.insert(MoeBuf::Steer, HostBuffer::from_slice(st));
        }
        let mut stats = Vec::with_capacity(self.launches.len());
        for l in &self.launches {
            let args = l
                .args
                .iter()
                .map(|a| match a {
                    MoeArg::In(b) => Named::In(*b),
                    MoeArg::Out(b) => Named::Out(*b),
                    MoeArg::Moe(p) => Named::Value(Arg::value(p)),
                    MoeArg::Quantize(p) => Named::Value(Arg::value(p)),
                })
                .collect();
            let r = launch_named(&mut self.bufs, l.kernel.name(), l.config, args)?;
            stats.push((l.kernel, r));
        }
        Ok(stats)
    }

    /// A buffer's contents as values of `T` (`Out` and `Weights` as f32, `Ids` as u32, …).
    pub fn read<T: crate::buffer::Plain>(&self, b: MoeBuf) -> Result<Vec<T>, HostError> {
        self.bufs
            .get(&b)
            .map(|h| h.to_vec())
            .ok_or_else(|| HostError(format!("{b:?} is not allocated")))
    }
}
