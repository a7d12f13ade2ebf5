//! AdamW, the learning-rate schedule and gradient-norm clipping, as PyTorch and transformers
//! compute them (the upstream recipe), with moments that checkpoints can save and restore.

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// Upstream's: betas 0.9/0.999, eps 1e-6, no weight decay.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-6,
            weight_decay: 0.0,
        }
    }
}

/// `torch.optim.AdamW` over a fixed, ordered list of parameters.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken so far (PyTorch's per-parameter `step`).
    pub steps: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// The fused in-place CPU step where it applies (off: the composed tensor ops everywhere,
    /// which the tests compare it with).
    fused: bool,
}

impl AdamW {
    pub fn new(params: &[Var], config: AdamWConfig) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        Ok(AdamW {
            config,
            steps: 0,
            m: params.iter().map(zeros).collect::<Result<_>>()?,
            v: params.iter().map(zeros).collect::<Result<_>>()?,
            fused: true,
        })
    }

    /// One update with learning rate `lr`. PyTorch's order: decoupled decay first, then
    /// `p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)`.
    pub fn step(&mut self, params: &[Var], grads: &[Tensor], lr: f64) -> Result<()> {
        let c = self.config;
        self.steps += 1;
        let t = self.steps as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let update = Update {
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            decay: (1.0 - lr * c.weight_decay) as f32,
            inv_bc2_sqrt: (1.0 / bc2_sqrt) as f32,
            eps: c.eps as f32,
            step_size: step_size as f32,
        };
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if self.fused && fused::applies(p.as_tensor(), g, &self.m[i], &self.v[i]) {
                fused::step(&update, p.as_tensor(), g, &self.m[i], &self.v[i])?;
                continue;
            }
            // m.lerp_(g, 1-b1) = m + (1-b1)(g - m); v = b2 v + (1-b2) g².
            let m = (&self.m[i] + ((g - &self.m[i])? * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let mut theta = p.as_tensor().clone();
            if c.weight_decay != 0.0 {
                theta = (theta * (1.0 - lr * c.weight_decay))?;
            }
            let denom = ((v.sqrt()? / bc2_sqrt)? + c.eps)?;
            let theta = (theta - (m.div(&denom)? * step_size)?)?;
            p.set(&theta)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Every first moment, then every second moment (parameter order). The CPU step updates
    /// moments in place: a caller keeping these past the next step copies them.
    pub fn moments(&self) -> Vec<Tensor> {
        self.m.iter().chain(&self.v).cloned().collect()
    }

    /// Replaces the moments with ones laid out as [`AdamW::moments`] gives them.
    pub fn set_moments(&mut self, mut moments: Vec<Tensor>) {
        assert_eq!(
            moments.len(),
            self.m.len() * 2,
            "one m and one v per parameter"
        );
        self.v = moments.split_off(self.m.len());
        self.m = moments;
    }

    /// Moments under `m.<name>` / `v.<name>`, for a safetensors file.
    pub fn state_tensors(&self, names: &[String]) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            out.insert(format!("m.{n}"), self.m[i].clone());
            out.insert(format!("v.{n}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`]; `None` names the missing tensor.
    pub fn load_state(
        &mut self,
        names: &[String],
        steps: u64,
        mut tensors: HashMap<String, Tensor>,
    ) -> std::result::Result<(), String> {
        for (i, n) in names.iter().enumerate() {
            for (slot, key) in [
                (&mut self.m[i], format!("m.{n}")),
                (&mut self.v[i], format!("v.{n}")),
            ] {
                let t = tensors.remove(&key).ok_or_else(|| format!("no `{key}`"))?;
                if t.dims() != slot.dims() {
                    return Err(format!(
                        "`{key}` has shape {:?}, the model {:?}",
                        t.dims(),
                        slot.dims()
                    ));
                }
                *slot = t;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// transformers' `get_linear_schedule_with_warmup` (upstream's `WarmupLinear`).
    #[default]
    Linear,
    /// Warmup, then constant (`get_constant_schedule_with_warmup`).
    Constant,
}

/// What `max_grad_norm` clips when several ranks train one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClipScope {
    /// The norm of the exact global-batch gradient (the ranks' summed gradients): the same
    /// update as one process on the whole batch, at any world size.
    #[default]
    Global,
    /// Upstream's TPU semantics (`clip_grad_norm_` before `xm.optimizer_step`): each rank clips
    /// its own share of the gradient (the global loss backpropagated through its rows only),
    /// then the ranks average. Depends on the world size; equals `Global` on one process.
    PerRank,
}

/// One step's constants, as f32 (the fused step's arithmetic).
struct Update {
    beta1: f32,
    beta2: f32,
    /// `1 - lr · weight_decay`.
    decay: f32,
    inv_bc2_sqrt: f32,
    eps: f32,
    /// `lr / (1 - beta1^t)`.
    step_size: f32,
}

/// The CPU step in place, one pass per tensor (m, v, then the parameter), in chunks on all
/// threads: the composed step above ran about a dozen tensor ops per parameter, each
/// allocating a fresh parameter-sized tensor (page faults and memory traffic over all 22.7M
/// parameters every step). Same formulas, same order of operations per element; elementwise,
/// so the result does not depend on the thread count.
mod fused {
    use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
    use rayon::prelude::*;

    use super::Update;

    /// Elements per parallel task.
    const CHUNK: usize = 1 << 14;

    /// Whether the fused step can run: every tensor f32 and contiguous on the CPU. (The moments
    /// are written in place; candle refuses an in-place op whose source shares the written
    /// storage.)
    pub fn applies(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> bool {
        let ok = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
        [p, g, m, v].into_iter().all(ok)
    }

    pub fn step(u: &Update, p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Result<()> {
        m.inplace_op2(g, &Moment::First(u.beta1))?;
        v.inplace_op2(g, &Moment::Second(u.beta2))?;
        p.inplace_op3(m, v, &Param(u))
    }

    fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
        let (a, b) = l.contiguous_offsets().ok_or_else(not_contiguous)?;
        Ok(&s.as_slice::<f32>()?[a..b])
    }

    fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
        let (a, b) = l.contiguous_offsets().ok_or_else(not_contiguous)?;
        match s {
            CpuStorage::F32(v) => Ok(&mut v[a..b]),
            _ => candle_core::bail!("fused AdamW: not f32"),
        }
    }

    fn not_contiguous() -> candle_core::Error {
        candle_core::Error::Msg("fused AdamW: not contiguous".into())
    }

    /// A moment updated in place from the gradient: the first, `m += (g - m) · (1 - beta1)`
    /// (torch's `lerp_`), or the second, `v = v · beta2 + g² · (1 - beta2)`.
    enum Moment {
        First(f32),
        Second(f32),
    }

    impl InplaceOp2 for Moment {
        fn name(&self) -> &'static str {
            match self {
                Moment::First(_) => "adamw-first-moment",
                Moment::Second(_) => "adamw-second-moment",
            }
        }
        fn cpu_fwd(
            &self,
            s: &mut CpuStorage,
            l: &Layout,
            gs: &CpuStorage,
            gl: &Layout,
        ) -> Result<()> {
            let (x, g) = (slice_mut(s, l)?, slice(gs, gl)?);
            let chunks = x.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK));
            match *self {
                Moment::First(b1) => chunks.for_each(|(m, g)| {
                    for (m, &g) in m.iter_mut().zip(g) {
                        *m += (g - *m) * (1.0 - b1);
                    }
                }),
                Moment::Second(b2) => chunks.for_each(|(v, g)| {
                    for (v, &g) in v.iter_mut().zip(g) {
                        *v = *v * b2 + g * g * (1.0 - b2);
                    }
                }),
            }
            Ok(())
        }
    }

    /// `p = p · decay - m / (sqrt(v) / sqrt(bc2) + eps) · step_size`.
    struct Param<'a>(&'a Update);

    impl InplaceOp3 for Param<'_> {
        fn name(&self) -> &'static str {
            "adamw-param"
        }
        fn cpu_fwd(
            &self,
            s: &mut CpuStorage,
            l: &Layout,
            ms: &CpuStorage,
            ml: &Layout,
            vs: &CpuStorage,
            vl: &Layout,
        ) -> Result<()> {
            let (p, m, v) = (slice_mut(s, l)?, slice(ms, ml)?, slice(vs, vl)?);
            let u = self.0;
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
                .for_each(|(p, (m, v))| {
                    for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                        let denom = v.sqrt() * u.inv_bc2_sqrt + u.eps;
                        *p = *p * u.decay - m / denom * u.step_size;
                    }
                });
            Ok(())
        }
    }
}

/// The learning rate for optimizer step `step` (0-based), as transformers' LambdaLR gives it:
/// the first step of a warmup uses lr 0, exactly like upstream.
pub fn lr_at(kind: ScheduleKind, base: f64, warmup: u64, total: u64, step: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    match kind {
        ScheduleKind::Constant => base,
        ScheduleKind::Linear => {
            let left = total.saturating_sub(step) as f64;
            base * (left / total.saturating_sub(warmup).max(1) as f64).max(0.0)
        }
    }
}

/// `torch.nn.utils.clip_grad_norm_`: returns the total L2 norm before clipping and scales the
/// gradients by `max_norm / (norm + 1e-6)` when that is below 1. `max_norm <= 0` only measures.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter() {
        sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                *g = (&*g * coef)?;
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn linear_schedule_is_transformers() {
        // warmup 500, 1000 steps: lr(0)=0, lr(250)=half, peak at 500, half again at 750, 0 at end.
        let f = |s| lr_at(ScheduleKind::Linear, 2e-5, 500, 1000, s);
        assert_eq!(f(0), 0.0);
        assert!((f(250) - 1e-5).abs() < 1e-12);
        assert!((f(500) - 2e-5).abs() < 1e-12);
        assert!((f(750) - 1e-5).abs() < 1e-12);
        assert_eq!(f(1000), 0.0);
        assert_eq!(lr_at(ScheduleKind::Constant, 1e-4, 0, 3, 2), 1e-4);
    }

    #[test]
    fn the_fused_cpu_step_equals_the_composed_one() {
        // Many chunks of the parallel loop, weight decay on, three steps.
        let n = 3 * (1 << 14) + 123;
        let values = |seed: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        };
        let cfg = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let run = |fused: bool| -> Vec<f32> {
            let p = Var::from_vec(values(7), n, &Device::Cpu).unwrap();
            let mut opt = AdamW::new(std::slice::from_ref(&p), cfg).unwrap();
            opt.fused = fused;
            for step in 0..3u32 {
                let g = Tensor::from_vec(values(step + 11), n, &Device::Cpu).unwrap();
                opt.step(std::slice::from_ref(&p), &[g], 1e-3).unwrap();
            }
            p.as_tensor().to_vec1().unwrap()
        };
        let (fused, composed) = (run(true), run(false));
        let worst = fused
            .iter()
            .zip(&composed)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "largest difference {worst}");
        assert_ne!(fused, values(7), "the step changed nothing");
    }

    #[test]
    fn adamw_matches_hand_computation() {
        // One scalar, two steps, weight decay on: the PyTorch formulas by hand in f64.
        let p = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(std::slice::from_ref(&p), cfg).unwrap();
        let (lr, grads) = (0.01, [0.5f64, -0.25]);
        let (mut theta, mut m, mut v) = (1.0f64, 0.0, 0.0);
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            let gt = Tensor::new(&[*g as f32], &Device::Cpu).unwrap();
            opt.step(std::slice::from_ref(&p), &[gt], lr).unwrap();
            theta *= 1.0 - lr * 0.1;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let denom = (v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-6;
            theta -= lr / (1.0 - 0.9f64.powi(t)) * m / denom;
        }
        let got = p.to_vec1::<f32>().unwrap()[0] as f64;
        assert!((got - theta).abs() < 1e-6, "{got} vs {theta}");
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let mut g = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-9);
        let after = clip_grad_norm(&mut g, 0.0).unwrap();
        assert!((after - 1.0).abs() < 1e-5);
    }
}
