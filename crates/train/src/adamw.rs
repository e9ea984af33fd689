//! AdamW (decoupled weight decay), with its moments readable and restorable so that a
//! resumed run continues exactly where its checkpoint left off. (candle-nn's `AdamW`
//! computes the same update but keeps its moments private, so a resume would restart
//! them from zero.)
use anyhow::Result;
use candle_core::{Tensor, Var};

pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken (for bias correction).
    pub t: usize,
    /// Per variable: (var, first moment, second moment).
    pub state: Vec<(Var, Tensor, Tensor)>,
}

impl AdamW {
    /// candle-nn's / PyTorch's defaults except the rate; no weight decay, as PEFT trains
    /// LoRA adapters.
    pub fn new(vars: Vec<Var>, lr: f64) -> Result<Self> {
        let state = vars
            .into_iter()
            .map(|v| {
                let z = v.as_tensor().zeros_like()?;
                Ok((v, z.clone(), z))
            })
            .collect::<Result<_>>()?;
        Ok(Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, t: 0, state })
    }

    /// One update from each variable's gradient (variables without one are left alone).
    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        self.t += 1;
        let c1 = 1.0 / (1.0 - self.beta1.powi(self.t as i32));
        let c2 = 1.0 / (1.0 - self.beta2.powi(self.t as i32));
        for ((var, m, v), g) in self.state.iter_mut().zip(grads) {
            let Some(g) = g else { continue };
            *m = ((&*m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&*m * c1)? / ((&*v * c2)?.sqrt()? + self.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
            var.set(&(decayed - (update * self.lr)?)?)?;
        }
        Ok(())
    }
}
