//! Decoding helpers: shapes, quantization parameters and data from fuzzer bytes.

use arbitrary::{Result, Unstructured};
use qkernels::{Isa, QParams, WeightQParams};

/// A small xorshift generator, so a few input bytes can seed a large tensor.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `len` bytes: taken from the input, generated from a seed, or a saturating constant pattern
/// (all-max activations against all-min weights is what exposes pair saturation).
pub fn bytes(u: &mut Unstructured<'_>, len: usize) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => {
            let mut v = vec![0u8; len];
            u.fill_buffer(&mut v)?;
            v
        }
        1 => {
            let c: u8 = u.arbitrary()?;
            vec![c; len]
        }
        2 => {
            // Extremes only: 0x00, 0x7f, 0x80, 0xff.
            let mut r = Rng::new(u.arbitrary()?);
            (0..len)
                .map(|_| [0x00, 0x7f, 0x80, 0xff][(r.next_u64() >> 62) as usize])
                .collect()
        }
        _ => {
            let mut r = Rng::new(u.arbitrary()?);
            (0..len).map(|_| (r.next_u64() >> 56) as u8).collect()
        }
    })
}

/// `len` i8 values (same styles as [`bytes`]).
pub fn i8s(u: &mut Unstructured<'_>, len: usize) -> Result<Vec<i8>> {
    Ok(bytes(u, len)?.into_iter().map(|b| b as i8).collect())
}

/// A legal, "reasonable" scale `m · 2^e` with `e` in `lo..=hi`.
pub fn scale(u: &mut Unstructured<'_>, lo: i32, hi: i32) -> Result<f64> {
    let e = u.int_in_range(lo..=hi)?;
    let m = 1.0 + f64::from(u.int_in_range(0u16..=1023)?) / 1024.0;
    Ok(m * 2f64.powi(e))
}

/// Legal quint8 qparams.
pub fn qparams_u8(u: &mut Unstructured<'_>, lo: i32, hi: i32) -> Result<QParams> {
    Ok(QParams::new(scale(u, lo, hi)?, u.int_in_range(0..=255)?))
}

/// Legal weight qparams for `n` channels (per tensor or per channel).
pub fn weight_qparams(u: &mut Unstructured<'_>, n: usize) -> Result<WeightQParams> {
    let zp = |u: &mut Unstructured<'_>| -> Result<i32> {
        // Mostly symmetric weights (zp 0, what PyTorch produces), sometimes any zero point.
        Ok(if u.ratio(1, 2)? {
            0
        } else {
            u.int_in_range(-128..=127)?
        })
    };
    Ok(if u.arbitrary()? {
        let mut s = Vec::with_capacity(n);
        let mut z = Vec::with_capacity(n);
        for _ in 0..n {
            s.push(scale(u, -12, -2)?);
            z.push(zp(u)?);
        }
        WeightQParams::per_channel(s, z)
    } else {
        WeightQParams::per_tensor(scale(u, -12, -2)?, zp(u)?)
    })
}

/// An optional bias of `n` floats: plausible values, or (rarely) raw bit patterns (NaN, inf).
pub fn bias(u: &mut Unstructured<'_>, n: usize) -> Result<Option<Vec<f32>>> {
    if !u.arbitrary()? {
        return Ok(None);
    }
    let raw = u.ratio(1, 8)?;
    let mut b = Vec::with_capacity(n);
    for _ in 0..n {
        b.push(if raw {
            f32::from_bits(u.arbitrary()?)
        } else {
            f32::from(u.int_in_range(-2000i16..=2000)?) / 64.0
        });
    }
    Ok(Some(b))
}

/// A dimension for hostile cases: mostly tiny (including 0), sometimes huge.
pub fn hostile_dim(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => usize::MAX - u.int_in_range(0usize..=3)?,
        1 => 1usize << u.int_in_range(16u32..=63)?,
        2 => u.arbitrary()?,
        _ => u.int_in_range(0usize..=9)?,
    })
}

/// A scale for hostile cases: any `f64` bit pattern, or a special value.
pub fn hostile_scale(u: &mut Unstructured<'_>) -> Result<f64> {
    Ok(match u.int_in_range(0u8..=9)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => 0.0,
        4 => -1.0,
        5 => 1e-300,
        6 => 1e300,
        7 => f64::from_bits(u.arbitrary()?),
        _ => scale(u, -20, 4)?,
    })
}

/// A zero point for hostile cases.
pub fn hostile_zp(u: &mut Unstructured<'_>) -> Result<i32> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => i32::MIN,
        1 => i32::MAX,
        2 => u.arbitrary()?,
        _ => u.int_in_range(-300..=300)?,
    })
}

/// Hostile quint8 qparams.
pub fn hostile_qparams(u: &mut Unstructured<'_>) -> Result<QParams> {
    Ok(QParams::new(hostile_scale(u)?, hostile_zp(u)?))
}

/// Hostile weight qparams: any lengths (≤ 8), any values.
pub fn hostile_weight_qparams(u: &mut Unstructured<'_>) -> Result<WeightQParams> {
    let per_channel = u.arbitrary()?;
    let ns = u.int_in_range(0usize..=8)?;
    let nz = if u.ratio(3, 4)? {
        ns
    } else {
        u.int_in_range(0usize..=8)?
    };
    let mut scales = Vec::new();
    for _ in 0..ns {
        scales.push(hostile_scale(u)?);
    }
    let mut zps = Vec::new();
    for _ in 0..nz {
        zps.push(hostile_zp(u)?);
    }
    Ok(WeightQParams {
        per_channel,
        scales,
        zero_points: zps,
    })
}

/// Any ISA, supported here or not.
pub fn any_isa(u: &mut Unstructured<'_>) -> Result<Isa> {
    Ok(*u.choose(&Isa::ALL)?)
}

/// A hostile buffer length (≤ `max`).
pub fn hostile_len(u: &mut Unstructured<'_>, max: usize) -> Result<usize> {
    u.int_in_range(0..=max)
}

/// Bytes of a hostile length (≤ `max`).
pub fn hostile_bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = hostile_len(u, max)?;
    bytes(u, n)
}

/// i8 values of a hostile length (≤ `max`).
pub fn hostile_i8s(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<i8>> {
    let n = hostile_len(u, max)?;
    i8s(u, n)
}

/// f32 zeros of a hostile length (≤ `max`).
pub fn hostile_f32s(u: &mut Unstructured<'_>, max: usize, v: f32) -> Result<Vec<f32>> {
    Ok(vec![v; hostile_len(u, max)?])
}
