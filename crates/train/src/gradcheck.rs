//! The forward/backward pass against central finite differences, in f64 on a tiny
//! random model of each kind (gemma3's norms, GELU and sliding window; llama's
//! interleaved RoPE, grouped-query attention and SiLU).
use crate::model::{Net, Shape};
use crate::run::pass;
use crate::sequence::Sequence;
use crate::LoraConfig;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

fn tiny(gemma: bool) -> Net {
    let shape = Shape {
        gemma,
        n_layer: 2,
        n_embd: 8,
        n_head: 2,
        n_head_kv: 1,
        head_dim: 4,
        n_rot: 4,
        rope_interleaved: !gemma,
        rope_base: 10_000.0,
        rope_freq_scale: 1.0,
        rms_eps: 1e-6,
        sliding: gemma.then_some((3, 2, 10_000.0)),
        softcap: None,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(if gemma { 1 } else { 2 });
    let (vocab, ff, qd) = (11, 12, 8);
    let mut get = |name: &str| -> anyhow::Result<Option<Tensor>> {
        if name.ends_with(".bias") {
            return Ok(None);
        }
        let dims: Vec<usize> = match name.rsplit_once('.').map(|(stem, _)| stem.rsplit('.').next().unwrap_or(stem)).unwrap_or(name) {
            "token_embd" => vec![vocab, 8],
            "output" => return Ok(None),
            "attn_q" => vec![qd, 8],
            "attn_k" | "attn_v" => vec![4, 8],
            "attn_output" => vec![8, qd],
            "ffn_gate" | "ffn_up" => vec![ff, 8],
            "ffn_down" => vec![8, ff],
            "attn_q_norm" | "attn_k_norm" if gemma => vec![4],
            "post_attention_norm" | "post_ffw_norm" if gemma => vec![8],
            "output_norm" | "attn_norm" | "ffn_norm" => vec![8],
            _ => return Ok(None),
        };
        let is_norm = dims.len() == 1;
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| if is_norm { rng.random_range(0.5..1.5) } else { rng.random_range(-0.5..0.5) }).collect();
        Ok(Some(Tensor::from_vec(v, dims, &Device::Cpu)?))
    };
    let mut lrng = rand::rngs::StdRng::seed_from_u64(3);
    let net = Net::build(shape, &mut get, &LoraConfig { rank: 2, ..LoraConfig::default() }, &mut lrng).unwrap();
    // B starts at zero; give it values so that A's gradient is not zero too.
    for (_, var) in net.vars() {
        let noise = Tensor::rand(-0.3f64, 0.3, var.shape(), &Device::Cpu).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    net
}

fn check(gemma: bool) {
    let net = tiny(gemma);
    assert_eq!(net.vars()[0].1.dtype(), DType::F64);
    // 6 tokens: past gemma's window of 3; the first two are context only.
    let seq = Sequence { tokens: vec![1, 4, 2, 9, 7, 3], trained: vec![false, false, true, true, true, true] };
    let grads = pass(&net, &seq, Some(1.0)).unwrap().grads.unwrap();
    let loss = |net: &Net| pass(net, &seq, None).unwrap().loss;
    let mut checked = 0;
    for (name, var) in net.vars().iter().step_by(3) {
        let grad: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        for i in (0..base.len()).step_by(5) {
            let h = 1e-5;
            let at = |x: f64| {
                let mut v = base.clone();
                v[i] = x;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
                loss(&net)
            };
            let numeric = (at(base[i] + h) - at(base[i] - h)) / (2.0 * h);
            at(base[i]);
            let err = (numeric - grad[i]).abs() / (numeric.abs() + grad[i].abs()).max(1e-6);
            assert!(err < 1e-5, "{name}[{i}]: backprop {} vs finite difference {numeric} (relative error {err})", grad[i]);
            checked += 1;
        }
    }
    assert!(checked > 20);
}

#[test]
fn gemma3_gradients_match_finite_differences() {
    check(true);
}

#[test]
fn llama_gradients_match_finite_differences() {
    check(false);
}
