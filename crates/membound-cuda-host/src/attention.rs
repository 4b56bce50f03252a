//! [`HostAttn`]: one decode-attention step (`membound_cuda::attention::attn_plan`, the launches
//! a GPU runs) executed by the host build of the kernels, with each launch's load figures.

use membound_cuda::Kernel;
use membound_cuda::attention::{AttnPlan, attn_plan_with};
use membound_spec::attention::AttnShape;

use crate::{Arg, HostBuffer, HostError, LoadStats, launch};

/// A layer's cache and one step's buffers in host memory (partials and output poisoned).
pub struct HostAttn {
    plan: AttnPlan,
    q: HostBuffer,
    k: HostBuffer,
    v: HostBuffer,
    sinks: HostBuffer,
    part_ml: HostBuffer,
    part_acc: HostBuffer,
    out: HostBuffer,
}

impl HostAttn {
    /// The cache (`k`, and `v` unless V is in K; `tokens` rows per head), queries and sinks of
    /// a step at `depth` over `splits` splits of the context (or the plan's choice for a
    /// device of `sm_count` SMs), with the tensor-core split kernel where the shape allows one
    /// and `mma` asks for it (`membound_cuda::attention::attn_plan_with`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shape: &AttnShape,
        tokens: usize,
        k: &[u8],
        v: &[u8],
        q: &[f32],
        sinks: &[f32],
        depth: usize,
        splits: Option<u32>,
        mma: bool,
    ) -> Result<HostAttn, HostError> {
        let plan = attn_plan_with(shape, tokens, depth, 2, splits, mma)
            .map_err(|e| HostError(e.to_string()))?;
        let (ml, acc) = plan.partial_len();
        Ok(HostAttn {
            q: HostBuffer::from_slice(q),
            k: HostBuffer::from_slice(k),
            v: HostBuffer::from_slice(if v.is_empty() { &[0u8; 16] } else { v }),
            sinks: HostBuffer::from_slice(if shape.sinks { sinks } else { &[0f32] }),
            part_ml: HostBuffer::poisoned(4 * ml),
            part_acc: HostBuffer::poisoned(4 * acc),
            out: HostBuffer::poisoned(4 * shape.n_heads * shape.d_v),
            plan,
        })
    }

    /// The plan.
    pub fn plan(&self) -> &AttnPlan {
        &self.plan
    }

    /// Runs the split kernel and the reduction; returns their load figures.
    pub fn forward(&mut self) -> Result<[(Kernel, LoadStats); 2], HostError> {
        let p = self.plan.params;
        let split = launch(
            self.plan.kernel.name(),
            self.plan.split,
            &mut [
                Arg::In(&self.q),
                Arg::In(&self.k),
                Arg::In(&self.v),
                Arg::Out(&mut self.part_ml),
                Arg::Out(&mut self.part_acc),
                Arg::value(&p),
            ],
        )?;
        let reduce = launch(
            Kernel::AttnReduce.name(),
            self.plan.reduce,
            &mut [
                Arg::In(&self.part_ml),
                Arg::In(&self.part_acc),
                Arg::In(&self.sinks),
                Arg::Out(&mut self.out),
                Arg::In(&self.sinks),
                Arg::value(&p),
            ],
        )?;
        Ok([(self.plan.kernel, split), (Kernel::AttnReduce, reduce)])
    }

    /// The outputs (`n_heads × d_v`).
    pub fn output(&self) -> Vec<f32> {
        self.out.to_vec()
    }
}
