//! Launches whose buffers are named by a key into a map of host buffers (a MoE layer's
//! [`membound_cuda::moe::MoeBuf`], a decode step's [`membound_cuda::decode::Buf`]).

use std::collections::BTreeMap;
use std::fmt::Debug;

use membound_cuda::LaunchConfig;

use crate::{Arg, HostBuffer, HostError, LoadStats, launch};

/// One argument of a named launch.
pub(crate) enum Named<'p, K> {
    /// A buffer the kernel reads.
    In(K),
    /// A buffer the kernel writes.
    Out(K),
    /// A by-value argument ([`Arg::value`]).
    Value(Arg<'p>),
}

/// Launches `name` with its buffers taken from `bufs` by key (they go back whatever the launch
/// returned); a read-only buffer named twice is passed as a copy the second time.
pub(crate) fn launch_named<K: Ord + Copy + Debug>(
    bufs: &mut BTreeMap<K, HostBuffer>,
    name: &str,
    cfg: LaunchConfig,
    args: Vec<Named<'_, K>>,
) -> Result<LoadStats, HostError> {
    let mut taken: Vec<(K, bool, HostBuffer)> = Vec::new();
    for a in &args {
        let (b, out) = match a {
            Named::In(b) => (*b, false),
            Named::Out(b) => (*b, true),
            Named::Value(_) => continue,
        };
        let again = taken
            .iter()
            .find(|(t, o, _)| *t == b && !o && !out)
            .map(|(_, _, h)| HostBuffer::from_slice(h.bytes()));
        match again.or_else(|| bufs.remove(&b)) {
            Some(h) => taken.push((b, out, h)),
            None => {
                restore(bufs, taken);
                return Err(HostError(format!(
                    "{name} needs {b:?} (absent or passed twice)"
                )));
            }
        }
    }
    let mut held = taken.iter_mut();
    let mut list: Vec<Arg<'_>> = Vec::with_capacity(args.len());
    for a in args {
        match a {
            Named::Value(v) => list.push(v),
            Named::In(_) | Named::Out(_) => {
                let Some((_, out, h)) = held.next() else {
                    break;
                };
                list.push(if *out { Arg::Out(h) } else { Arg::In(&*h) });
            }
        }
    }
    let r = launch(name, cfg, &mut list);
    drop(list);
    restore(bufs, taken);
    r
}

fn restore<K: Ord>(bufs: &mut BTreeMap<K, HostBuffer>, taken: Vec<(K, bool, HostBuffer)>) {
    for (b, _, buf) in taken {
        bufs.entry(b).or_insert(buf);
    }
}
