//! Compile errors of the attribute macros (and of the combinators' `Outcome` bound).
#![cfg(feature = "macros")]

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
