//! Which layers a decode step builds when the whole model does not fit ([`LayerSample`]), and
//! how a sampled step's time stands for the whole model's.
//!
//! Layers are grouped by what their computation is (attention kind — full, sliding, linear —
//! and dense FFN or MoE). A sample takes layers of every group, evenly spaced through it, in
//! proportion to the group's size; each sampled layer stands for `count / sampled` layers of
//! its group. The whole model's step time is the embedding and lm_head time plus each sampled
//! layer's time times what it stands for ([`LayerSample::scale`]): layer counts, not bytes, so
//! the estimate assumes nothing about bandwidth.

use membound_spec::ModelSpec;
use membound_spec::model::LayerKind;

/// The layers a step builds and what each stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSample {
    /// Model layer indices, ascending.
    pub layers: Vec<u32>,
    /// Model layers each stands for (1 each for the whole model).
    pub weights: Vec<f64>,
}

/// The group of layer `i`: its attention kind and whether its FFN is MoE.
fn group(m: &ModelSpec, i: u32) -> (u8, bool) {
    let kind = match m.layer_kind(i) {
        LayerKind::Full => 0,
        LayerKind::Sliding => 1,
        LayerKind::Linear => 2,
    };
    (kind, m.is_moe_layer(i))
}

impl LayerSample {
    /// Every layer.
    pub fn whole(m: &ModelSpec) -> LayerSample {
        LayerSample {
            layers: (0..m.n_layers).collect(),
            weights: vec![1.0; m.n_layers as usize],
        }
    }

    /// Whether every layer is built.
    pub fn is_whole(&self, m: &ModelSpec) -> bool {
        self.layers.len() == m.n_layers as usize
    }

    /// A sample for a device with `budget` bytes: the whole model where the layers' memory
    /// (`memory(i)`: weights and cache of layer `i`) fits; else layers added one at a time to
    /// the group least represented, until the next would not fit or the sample reads at least
    /// `touched` bytes per token (`reads(i)`) with two layers of every group (or all of a small
    /// group). `None` when not even one layer of each group fits.
    pub fn choose(
        m: &ModelSpec,
        budget: u64,
        touched: u64,
        memory: impl Fn(u32) -> u64,
        reads: impl Fn(u32) -> u64,
    ) -> Option<LayerSample> {
        let all: u64 = (0..m.n_layers).map(&memory).sum();
        if all <= budget {
            return Some(LayerSample::whole(m));
        }
        let mut groups: Vec<((u8, bool), Vec<u32>)> = Vec::new();
        for i in 0..m.n_layers {
            let g = group(m, i);
            match groups.iter_mut().find(|(k, _)| *k == g) {
                Some((_, v)) => v.push(i),
                None => groups.push((g, vec![i])),
            }
        }
        let spaced = |members: &[u32], k: usize| -> Vec<u32> {
            (0..k)
                .map(|j| members[((2 * j + 1) * members.len()) / (2 * k)])
                .collect()
        };
        let mut taken = vec![0usize; groups.len()];
        let (mut used, mut read) = (0u64, 0u64);
        loop {
            let first_round = taken.contains(&0);
            let satisfied = !first_round
                && read >= touched
                && groups
                    .iter()
                    .zip(&taken)
                    .all(|((_, v), &t)| t >= v.len().min(2));
            if satisfied {
                break;
            }
            // The group least represented that still has layers to give.
            let Some(g) = (0..groups.len())
                .filter(|&g| taken[g] < groups[g].1.len())
                .min_by(|&a, &b| {
                    let r = |g: usize| taken[g] as f64 / groups[g].1.len() as f64;
                    r(a).total_cmp(&r(b))
                })
            else {
                break;
            };
            let next = spaced(&groups[g].1, taken[g] + 1);
            let (new_mem, new_read): (u64, u64) = next
                .iter()
                .fold((0, 0), |(m_, r), &i| (m_ + memory(i), r + reads(i)));
            let old: Vec<u32> = spaced(&groups[g].1, taken[g]);
            let (old_mem, old_read): (u64, u64) = old
                .iter()
                .fold((0, 0), |(m_, r), &i| (m_ + memory(i), r + reads(i)));
            if used - old_mem + new_mem > budget {
                if first_round {
                    return None;
                }
                break;
            }
            used = used - old_mem + new_mem;
            read = read - old_read + new_read;
            taken[g] += 1;
        }
        let mut picked: Vec<(u32, f64)> = groups
            .iter()
            .zip(&taken)
            .flat_map(|((_, v), &k)| {
                let w = v.len() as f64 / k as f64;
                spaced(v, k).into_iter().map(move |i| (i, w))
            })
            .collect();
        picked.sort_by_key(|p| p.0);
        Some(LayerSample {
            layers: picked.iter().map(|p| p.0).collect(),
            weights: picked.iter().map(|p| p.1).collect(),
        })
    }

    /// The whole model's step time from a sampled step: `fixed` (embedding, final norm,
    /// lm_head) plus each sampled layer's time times the layers it stands for.
    pub fn scale(&self, fixed: f64, layer_times: &[f64]) -> f64 {
        fixed
            + self
                .weights
                .iter()
                .zip(layer_times)
                .map(|(w, t)| w * t)
                .sum::<f64>()
    }

    /// The whole model's step time from a sampled step timed as one (`step`, its `fixed` part
    /// included), where its layers cannot be timed inside it (a GPU's step is one graph): the
    /// step's layer time is shared among the sampled layers in proportion to `alone` (each
    /// layer timed by itself; only their ratios count, so a cache that favours one layer
    /// replayed alone favours them all alike), then scaled as [`LayerSample::scale`] does.
    /// Layers of one kind scale by layer counts exactly.
    /// Layers timed alone run warm (their own bytes replayed): one smaller than the last-level
    /// cache times faster alone than in the step, and takes less of its share.
    ///
    /// # Panics
    /// When `alone` does not hold one time per sampled layer (a caller's bug).
    pub fn scale_shared(&self, fixed: f64, step: f64, alone: &[f64]) -> f64 {
        assert_eq!(
            alone.len(),
            self.layers.len(),
            "one time alone per sampled layer"
        );
        let layers = (step - fixed).max(0.0);
        let n = self.layers.len().max(1) as f64;
        let sum: f64 = alone.iter().sum();
        let shares: Vec<f64> = if sum > 0.0 {
            alone.iter().map(|a| layers * a / sum).collect()
        } else {
            vec![layers / n; self.layers.len()]
        };
        self.scale(fixed, &shares)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membound_spec::registry::find;

    #[test]
    fn a_model_that_fits_is_built_whole() {
        let m = find("llama-3.1-8b").unwrap();
        let s = LayerSample::choose(&m, 1 << 40, 0, |_| 1 << 20, |_| 1).unwrap();
        assert!(s.is_whole(&m));
        assert_eq!(s.scale(2.0, &vec![1.0; 32]), 34.0);
    }

    #[test]
    fn a_sample_covers_every_group_and_stands_for_the_whole_model() {
        // gpt-oss: sliding and full layers alternate; GLM: one dense layer, then MoE.
        for name in ["gpt-oss-120b", "glm-4.7-flash", "qwen3-coder-next"] {
            let m = find(name).unwrap();
            let s = LayerSample::choose(&m, 10 << 20, 3 << 20, |_| 1 << 20, |_| 1 << 20).unwrap();
            assert!(!s.is_whole(&m), "{name}");
            let groups: std::collections::BTreeSet<_> =
                (0..m.n_layers).map(|i| group(&m, i)).collect();
            let sampled: std::collections::BTreeSet<_> =
                s.layers.iter().map(|&i| group(&m, i)).collect();
            assert_eq!(groups, sampled, "{name}: every group sampled");
            // What the sampled layers stand for adds up to the model's layers, group by group.
            assert!((s.weights.iter().sum::<f64>() - f64::from(m.n_layers)).abs() < 1e-9);
            // Equal layer times scale to the model's layer count exactly.
            let t = s.scale(0.0, &vec![1.0; s.layers.len()]);
            assert!((t - f64::from(m.n_layers)).abs() < 1e-9, "{name}: {t}");
            assert!(s.layers.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn a_step_timed_whole_is_shared_by_the_layers_alone_times() {
        // Two layers standing for 10 and 30: equal alone, the step's 8 of layer time scales to
        // 2 + 4 x 10 + 4 x 30; the second three times as slow alone takes 6 of the 8.
        let s = LayerSample {
            layers: vec![0, 5],
            weights: vec![10.0, 30.0],
        };
        assert!((s.scale_shared(2.0, 10.0, &[1.0, 1.0]) - 162.0).abs() < 1e-9);
        assert!((s.scale_shared(2.0, 10.0, &[1.0, 3.0]) - (2.0 + 20.0 + 180.0)).abs() < 1e-9);
        // No usable alone times: equal shares; a step faster than its fixed part: no layers.
        assert!((s.scale_shared(2.0, 10.0, &[0.0, 0.0]) - 162.0).abs() < 1e-9);
        assert!((s.scale_shared(2.0, 1.0, &[1.0, 1.0]) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_sample_stays_in_the_budget_and_says_when_nothing_fits() {
        let m = find("llama-3.1-70b").unwrap();
        let s = LayerSample::choose(&m, 5 << 20, u64::MAX, |_| 1 << 20, |_| 1).unwrap();
        assert_eq!(s.layers.len(), 5);
        assert!((s.weights[0] - 16.0).abs() < 1e-9);
        assert!(LayerSample::choose(&m, 1 << 19, 0, |_| 1 << 20, |_| 1).is_none());
        // Enough reads stop the sample early (two layers of the one group).
        let s = LayerSample::choose(&m, 40 << 20, 1, |_| 1 << 20, |_| 1).unwrap();
        assert_eq!(s.layers.len(), 2);
    }
}
