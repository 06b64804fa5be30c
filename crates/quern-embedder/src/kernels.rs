//! Two element-wise steps of the encoder written for the CPU, on the calling thread: the attention softmax (with
//! padding masked out) and the exact GELU.
//!
//! candle's own versions cost about a quarter of a forward pass: its softmax calls the C library's `expf` per score
//! and runs on rayon's global pool (shared by all the workers, so two passes wait on each other there), and its GELU
//! calls a scalar `erf`. These use the same mathematics in loops the compiler vectorises with plain SSE2, the x86-64
//! baseline (no target-cpu flags): `exp` from a degree-6 polynomial after range reduction (Cephes' `expf`, about 1
//! ulp), `erf` from Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7; 3e-7 in f32) and its Taylor series near 0. The tests hold them to the standard
//! library's `exp` and to a reference `erf`.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Softmax over the last dimension of `(batch, heads, queries, keys)` attention scores, where keys at or past
/// `lengths[batch]` are padding: they get exactly zero weight.
pub(crate) fn masked_softmax(scores: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    scores.apply_op1_no_bwd(&MaskedSoftmax { lengths })
}

/// `x · Φ(x)`, the exact (erf-based) GELU of BERT's feed-forward block.
pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&Gelu)
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => bail!("{op} needs a contiguous f32 tensor"),
    }
}

struct MaskedSoftmax<'a> {
    lengths: &'a [usize],
}

impl CustomOp1 for MaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let scores = contiguous_f32(storage, layout, self.name())?;
        let (batch, heads, queries, keys) = layout.shape().dims4()?;
        if self.lengths.len() != batch {
            bail!("masked-softmax: {} lengths for a batch of {batch}", self.lengths.len());
        }
        let mut out = vec![0.0f32; scores.len()];
        let per_text = heads * queries * keys;
        for ((scores, out), &length) in scores.chunks(per_text).zip(out.chunks_mut(per_text)).zip(self.lengths) {
            let length = length.clamp(1, keys);
            for (row, out) in scores.chunks_exact(keys).zip(out.chunks_exact_mut(keys)) {
                softmax_row(&row[..length], &mut out[..length]);
            }
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

fn softmax_row(scores: &[f32], out: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (o, &s) in out.iter_mut().zip(scores) {
        *o = exp(s - max);
    }
    let scale = 1.0 / out.iter().sum::<f32>();
    out.iter_mut().for_each(|o| *o *= scale);
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let out = x.iter().map(|&x| 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `e^x` in f32 for x up to 88 (0 below -87.3, where the result would be denormal or zero anyway).
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Adding 1.5 × 2^23 rounds to the nearest integer without SSE4.1's `roundps`.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(-87.3, 88.0);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n from the exponent bits: n is the low bits of `shifted`, within -126..=128 after the clamp.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if x < -87.3 {
        0.0
    } else {
        p * scale
    }
}

/// The error function: Abramowitz and Stegun 7.1.26, and its Taylor series below 0.5, where 7.1.26's `1 - …`
/// cancels away the bits f32 has.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let far = 1.0 - poly * exp(-a * a);
    // 2/√π (a - a³/3 + a⁵/10 - a⁷/42 + a⁹/216 - a¹¹/1320); the next term is below 2e-8 for a < 0.5.
    let s = a * a;
    let near = a
        * std::f32::consts::FRAC_2_SQRT_PI
        * (1.0 + s * (-1.0 / 3.0 + s * (1.0 / 10.0 + s * (-1.0 / 42.0 + s * (1.0 / 216.0 - s / 1320.0)))));
    // Both computed, one kept: a select the compiler vectorises, where a branch would not be.
    (if a < 0.5 { near } else { far }).copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// erf to double precision (a series near 0, a continued fraction beyond), as the reference.
    fn erf_reference(x: f64) -> f64 {
        let a = x.abs();
        let value = if a < 2.5 {
            let (mut term, mut sum, mut k) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                k += 1.0;
                term *= -a * a / k;
                sum += term / (2.0 * k + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut fraction = 0.0;
            for k in (1..60).rev() {
                fraction = (k as f64 / 2.0) / (a + fraction);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction)
        };
        value.copysign(x)
    }

    #[test]
    fn exp_matches_the_standard_library_to_a_few_ulps() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert_eq!(exp(-3.0e38), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_is_within_3e7_of_the_reference() {
        let mut x = -6.0f32;
        while x < 6.0 {
            let (got, want) = (erf(x) as f64, erf_reference(x as f64));
            assert!((got - want).abs() < 3e-7, "erf({x}) = {got}, want {want}");
            x += 0.001_3;
        }
    }

    #[test]
    fn masked_softmax_matches_candles_softmax_and_zeroes_padding() {
        let device = Device::Cpu;
        let scores = Tensor::arange(0u32, 2 * 3 * 4 * 5, &device).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let scores = ((scores * 0.37).unwrap().sin().unwrap() * 4.0).unwrap().reshape((2, 3, 4, 5)).unwrap();
        let ours = masked_softmax(&scores, &[5, 3]).unwrap();
        let full = candle_nn::ops::softmax_last_dim(&scores.narrow(0, 0, 1).unwrap()).unwrap();
        let diff = (ours.narrow(0, 0, 1).unwrap() - full).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        let unpadded = scores.narrow(0, 1, 1).unwrap().narrow(3, 0, 3).unwrap().contiguous().unwrap();
        let short = candle_nn::ops::softmax_last_dim(&unpadded).unwrap();
        let ours_short = ours.narrow(0, 1, 1).unwrap();
        let diff = (ours_short.narrow(3, 0, 3).unwrap() - short).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        let padding = ours_short.narrow(3, 3, 2).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(padding.to_scalar::<f32>().unwrap(), 0.0);
    }
}
