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
}

impl AdamW {
    pub fn new(params: &[Var], config: AdamWConfig) -> Result<Self> {
        let zeros = |p: &Var| p.as_tensor().zeros_like();
        Ok(AdamW {
            config,
            steps: 0,
            m: params.iter().map(zeros).collect::<Result<_>>()?,
            v: params.iter().map(zeros).collect::<Result<_>>()?,
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
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
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

    /// Every first moment, then every second moment (parameter order).
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
