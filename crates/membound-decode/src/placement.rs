//! One decode step with its layers placed across devices ([`PlacedStep`]): llama.cpp's layer
//! split over two GPUs, and the first layers on the CPU with the rest on a GPU (Ollama's partial
//! offload). Each part runs as the whole step would there — the CPU part is a
//! [`CpuDecoder`] built without its head, a device part a [`DeviceStep`] stage on its own
//! executor — and the residual stream (`hidden` f32) crosses between them through host memory,
//! as both engines do at batch 1.

use std::fmt;

use membound_cuda::decode::{Buf, StepExec, StepLaunch, step_launches};
use membound_cuda::moe::{f32s, u32s};
use membound_spec::ModelSpec;
use rayon::ThreadPool;

use crate::device::{DeviceStep, Stage, le};
use crate::source::TensorSource;
use crate::{CpuDecoder, DecodeError, StepOptions};

/// Where a step's layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every layer on one device.
    Whole,
    /// Layers `0..at` on the first device, the rest and the head on the second.
    Split {
        /// The first layer of the second device.
        at: u32,
    },
    /// Layers `0..cpu_layers` (and the embedding) on the CPU, the rest and the head on the
    /// device.
    Offload {
        /// Layers on the CPU.
        cpu_layers: u32,
    },
}

impl fmt::Display for Placement {
    /// The case-id suffix: empty, `split{at}`, `cpu{n}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Whole => Ok(()),
            Placement::Split { at } => write!(f, "split{at}"),
            Placement::Offload { cpu_layers } => write!(f, "cpu{cpu_layers}"),
        }
    }
}

impl Placement {
    /// Checks the placement against `m`'s layers.
    pub fn check(&self, m: &ModelSpec) -> Result<(), DecodeError> {
        let n = m.n_layers;
        let bad = |what: String| Err(DecodeError::Request(what));
        match *self {
            Placement::Whole => Ok(()),
            Placement::Split { at } if at == 0 || at >= n => bad(format!(
                "a split at layer {at} of {n} leaves a device without layers"
            )),
            Placement::Offload { cpu_layers } if cpu_layers == 0 || cpu_layers >= n => bad(
                format!("{cpu_layers} of {n} layers on the CPU leaves a device without layers"),
            ),
            _ => Ok(()),
        }
    }

    /// The device stages, in order.
    pub fn stages(&self, m: &ModelSpec) -> Vec<Stage> {
        let n = m.n_layers;
        match *self {
            Placement::Whole => vec![Stage::whole(m)],
            Placement::Split { at } => vec![Stage::range(m, 0..at), Stage::range(m, at..n)],
            Placement::Offload { cpu_layers } => vec![Stage::range(m, cpu_layers..n)],
        }
    }
}

/// A device stage and what runs it.
struct Part<E> {
    step: DeviceStep,
    exec: E,
}

/// One model's decode step placed across the CPU and devices.
pub struct PlacedStep<E: StepExec> {
    cpu: Option<CpuDecoder>,
    parts: Vec<Part<E>>,
    /// The launches of each part at the position they were made for.
    launches: Option<(usize, Vec<Vec<StepLaunch>>)>,
}

fn dev(e: membound_cuda::CudaError) -> DecodeError {
    DecodeError::Request(format!("device: {e}"))
}

impl<E: StepExec> PlacedStep<E> {
    /// Builds `m` (every layer) from `src` as `placement` places it. `exec(i, step)` makes the
    /// executor of device stage `i` (its buffers, weights uploaded) from the stage's step.
    pub fn new(
        m: &ModelSpec,
        src: &dyn TensorSource,
        opts: &StepOptions,
        sm_count: u32,
        placement: Placement,
        exec: &mut dyn FnMut(usize, &DeviceStep) -> Result<E, DecodeError>,
    ) -> Result<PlacedStep<E>, DecodeError> {
        placement.check(m)?;
        let cpu = match placement {
            Placement::Offload { cpu_layers } => {
                let mut o = opts.clone();
                o.head = false;
                o.sample = crate::sample::LayerSample {
                    layers: (0..cpu_layers).collect(),
                    weights: vec![1.0; cpu_layers as usize],
                };
                Some(CpuDecoder::new(m, src, &o)?)
            }
            _ => None,
        };
        let mut parts = Vec::new();
        for (i, stage) in placement.stages(m).iter().enumerate() {
            let step = DeviceStep::stage(m, src, opts, sm_count, stage)?;
            let exec = exec(i, &step)?;
            parts.push(Part { step, exec });
        }
        Ok(PlacedStep {
            cpu,
            parts,
            launches: None,
        })
    }

    /// Launches per step on each device stage.
    pub fn launch_counts(&self, pos: usize) -> Result<Vec<usize>, DecodeError> {
        self.parts
            .iter()
            .map(|p| Ok(step_launches(&p.step.desc, pos).map_err(dev)?.len()))
            .collect()
    }

    /// One decode step of token `token` at position `pos`; returns the argmax. Each stage
    /// waits for the one before (the residual stream is read back and written on).
    pub fn step(&mut self, pool: &ThreadPool, token: u32, pos: usize) -> Result<u32, DecodeError> {
        if self.launches.as_ref().is_none_or(|(p, _)| *p != pos) {
            let l = self
                .parts
                .iter()
                .map(|p| step_launches(&p.step.desc, pos).map_err(dev))
                .collect::<Result<_, _>>()?;
            self.launches = Some((pos, l));
        }
        let Some((_, launches)) = &self.launches else {
            return Err(DecodeError::Request("no launches".into()));
        };
        let mut x: Option<Vec<u8>> = match &mut self.cpu {
            Some(cpu) => Some(le(cpu.hidden(pool, token, pos)?)),
            None => None,
        };
        for (part, l) in self.parts.iter_mut().zip(launches) {
            match &x {
                Some(bytes) => part.exec.write(Buf::X, bytes).map_err(dev)?,
                None => part
                    .exec
                    .write(Buf::Embd, &part.step.embed(token)?)
                    .map_err(dev)?,
            }
            part.exec.run(l).map_err(dev)?;
            if part.step.desc.output.is_none() {
                x = Some(part.exec.read(Buf::X).map_err(dev)?);
            }
        }
        let token = u32s(&self.last()?.exec.read(Buf::Token).map_err(dev)?);
        token
            .first()
            .copied()
            .ok_or_else(|| DecodeError::Request("the argmax buffer is empty".into()))
    }

    fn last(&mut self) -> Result<&mut Part<E>, DecodeError> {
        self.parts
            .last_mut()
            .ok_or_else(|| DecodeError::Request("a placement without a device".into()))
    }

    /// Logits of the last step (read from the last device).
    pub fn logits(&mut self) -> Result<Vec<f32>, DecodeError> {
        Ok(f32s(&self.last()?.exec.read(Buf::Logits).map_err(dev)?))
    }
}
