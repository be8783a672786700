//! Every golden op case (produced by PyTorch 2.15, fbgemm engine) against the scalar reference
//! `qkernels-ref`, byte for byte, in every accumulation mode that applies.

mod common;

use common::*;
use qkernels_ref as r;

#[test]
fn every_golden_case_matches_reference() {
    let g = Golden::load();
    let checked = check_all(&g, &RefBackend, "ref");
    println!(
        "golden/ref: {} cases, {checked} case×mode checks, all bytes equal",
        g.cases.len()
    );
}

#[test]
fn saturating_cases_differ_between_modes() {
    // The saturation cases must actually exercise saturation: y != y_exact.
    let g = Golden::load();
    let sat: Vec<_> = g
        .cases
        .iter()
        .filter(|c| c["params"]["fbgemm_i16_saturation"].as_bool() == Some(true))
        .collect();
    assert_eq!(sat.len(), 2);
    for case in sat {
        assert_ne!(
            g.tensor(case, "y").u8(),
            g.tensor(case, "y_exact").u8(),
            "{}",
            name(case)
        );
    }
}

#[test]
fn add_ties_need_the_tail_rule() {
    // Applying one formula to every element fails on the tie cases; the tail rule matches.
    let g = Golden::load();
    let mut seen = 0;
    for case in g.cases.iter().filter(|c| name(c).starts_with("add_ties_")) {
        let p = &case["params"];
        let (a, b) = (g.tensor(case, "a").u8(), g.tensor(case, "b").u8());
        let (qa, qb, qo) = (qparams(&p["a"]), qparams(&p["b"]), qparams(&p["out"]));
        let relu = p["relu"].as_bool().unwrap();
        let y = g.tensor(case, "y").u8();
        let all_vector: Vec<u8> = (0..a.len())
            .map(|i| r::ops::add_element_vector(a[i], qa, b[i], qb, qo, relu))
            .collect();
        let all_scalar: Vec<u8> = (0..a.len())
            .map(|i| r::ops::add_element_scalar(a[i], qa, b[i], qb, qo, relu))
            .collect();
        assert_ne!(
            all_vector,
            y,
            "{}: vector formula alone should miss",
            name(case)
        );
        if a.len() >= 64 {
            assert_ne!(
                all_scalar,
                y,
                "{}: scalar formula alone should miss",
                name(case)
            );
        } else {
            // Shorter than one vector step: PyTorch runs the scalar formula on every element.
            assert_eq!(all_scalar, y, "{}", name(case));
        }
        assert_eq!(r::add(&a, qa, &b, qb, qo, relu), y, "{}", name(case));
        seen += 1;
    }
    assert_eq!(seen, 3);
}
