//! Generates the worked examples of `docs/semantics.md` and checks that the document holds
//! exactly what the code computes (so the numbers in the doc are never typed in by hand).
//! `QKERNELS_BLESS=1 cargo test --test semantics_doc` rewrites the generated sections.

use qkernels_ref::QParams;
use qkernels_ref::ops::{add_element_scalar, add_element_vector};

/// The qparams of a real ResNet block (a = conv2 output, b = identity, out = add_relu).
const A: QParams = QParams::new(0.009925744496285915, 75);
const B: QParams = QParams::new(0.02780967578291893, 61);
const OUT: QParams = QParams::new(0.03012925386428833, 56);

fn clamp_u8(v: i64) -> u8 {
    v.clamp(0, 255) as u8
}

/// Naive 1: add the integers.
fn naive_sum(qa: u8, qb: u8) -> u8 {
    clamp_u8(i64::from(qa) + i64::from(qb))
}

/// Naive 2: add the centred integers, re-centre on the output zero point (ignores scales).
fn naive_centred(qa: u8, qb: u8, a: QParams, b: QParams, o: QParams) -> u8 {
    clamp_u8(
        i64::from(qa) - i64::from(a.zero_point) + i64::from(qb) - i64::from(b.zero_point)
            + i64::from(o.zero_point),
    )
}

/// Naive 3: the float formula in f32, truncated with `as` (what a quick port often does).
fn float_truncating(qa: u8, qb: u8, a: QParams, b: QParams, o: QParams) -> u8 {
    let c = a.scale_f32() * (i32::from(qa) - a.zero_point) as f32
        + b.scale_f32() * (i32::from(qb) - b.zero_point) as f32;
    clamp_u8(i64::from((c / o.scale_f32()) as i32) + i64::from(o.zero_point))
}

/// Naive 4: the float formula in f64 with `round()` (half away from zero).
fn float_round_away(qa: u8, qb: u8, a: QParams, b: QParams, o: QParams) -> u8 {
    let c = a.scale * f64::from(i32::from(qa) - a.zero_point)
        + b.scale * f64::from(i32::from(qb) - b.zero_point);
    clamp_u8((c / o.scale).round() as i64 + i64::from(o.zero_point))
}

fn table(rows: &[(u8, u8)], a: QParams, b: QParams, o: QParams) -> String {
    let mut s = String::from(
        "| qa | qb | `qa + qb` | `(qa−za)+(qb−zb)+zo` | f32 formula, `as` truncation | f64 formula, `round()` | PyTorch vector formula | PyTorch scalar (tail) formula |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for &(qa, qb) in rows {
        s += &format!(
            "| {qa} | {qb} | {} | {} | {} | {} | **{}** | **{}** |\n",
            naive_sum(qa, qb),
            naive_centred(qa, qb, a, b, o),
            float_truncating(qa, qb, a, b, o),
            float_round_away(qa, qb, a, b, o),
            add_element_vector(qa, a, qb, b, o, false),
            add_element_scalar(qa, a, qb, b, o, false),
        );
    }
    s
}

/// Share of all 65,536 (qa, qb) pairs on which a formula disagrees with PyTorch's vector formula.
fn disagreement(f: impl Fn(u8, u8) -> u8, a: QParams, b: QParams, o: QParams) -> String {
    let mut bad = 0u32;
    for qa in 0..=255u8 {
        for qb in 0..=255u8 {
            if f(qa, qb) != add_element_vector(qa, a, qb, b, o, false) {
                bad += 1;
            }
        }
    }
    format!("{bad} of 65536 ({:.1} %)", f64::from(bad) * 100.0 / 65536.0)
}

fn summary(a: QParams, b: QParams, o: QParams) -> String {
    format!(
        "| formula | pairs that differ from PyTorch |\n|---|---:|\n\
         | `qa + qb` | {} |\n\
         | `(qa−za)+(qb−zb)+zo` | {} |\n\
         | f32 formula, `as` truncation | {} |\n\
         | f64 formula, `round()` | {} |\n\
         | PyTorch scalar (tail) formula | {} |\n",
        disagreement(naive_sum, a, b, o),
        disagreement(|x, y| naive_centred(x, y, a, b, o), a, b, o),
        disagreement(|x, y| float_truncating(x, y, a, b, o), a, b, o),
        disagreement(|x, y| float_round_away(x, y, a, b, o), a, b, o),
        disagreement(|x, y| add_element_scalar(x, a, y, b, o, false), a, b, o),
    )
}

fn generated_sections() -> Vec<(&'static str, String)> {
    let rows = [
        (75, 61),
        (200, 100),
        (255, 255),
        (0, 0),
        (10, 250),
        (150, 30),
        (90, 70),
    ];
    // Tie-heavy qparams: a and b share scale s = 2^-7, out scale 2s, so sums land on .5.
    let ta = QParams::new(0.0078125, 0);
    let tb = QParams::new(0.0078125, 0);
    let to = QParams::new(0.015625, 0);
    let tie_rows = [(1, 0), (3, 0), (2, 3), (5, 0), (100, 27)];
    // With so = 2·sa for the seed's sa, the vector and scalar dequantizations disagree too.
    let sa = QParams::new(0.009925744496285915, 75);
    let sb = QParams::new(0.009925744496285915, 61);
    let so = QParams::new(2.0 * 0.009925744496285915, 56);
    vec![
        ("add-example", table(&rows, A, B, OUT)),
        ("add-summary", summary(A, B, OUT)),
        ("tie-example", table(&tie_rows, ta, tb, to)),
        ("tie-summary", summary(ta, tb, to)),
        ("tie2-summary", summary(sa, sb, so)),
    ]
}

#[test]
fn semantics_doc_examples_are_generated_by_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/semantics.md");
    let mut doc = std::fs::read_to_string(&path).expect("docs/semantics.md");
    let bless = std::env::var_os("QKERNELS_BLESS").is_some();
    for (name, body) in generated_sections() {
        let begin = format!("<!-- BEGIN GENERATED {name} -->\n");
        let end = format!("<!-- END GENERATED {name} -->");
        let s = doc
            .find(&begin)
            .unwrap_or_else(|| panic!("docs/semantics.md lacks {begin}"))
            + begin.len();
        let e = s + doc[s..]
            .find(&end)
            .unwrap_or_else(|| panic!("docs/semantics.md lacks {end}"));
        if bless {
            doc.replace_range(s..e, &body);
        } else {
            assert_eq!(
                &doc[s..e],
                body,
                "section {name} of docs/semantics.md is stale (QKERNELS_BLESS=1 to rewrite)"
            );
        }
    }
    if bless {
        std::fs::write(&path, doc).unwrap();
    }
}

#[test]
fn seed_example_from_the_spec() {
    // pytorch-semantics.md §3: qa=200, qb=100 with the seed qparams gives 133.
    assert_eq!(add_element_vector(200, A, 100, B, OUT, false), 133);
    assert_eq!(add_element_scalar(200, A, 100, B, OUT, false), 133);
}
