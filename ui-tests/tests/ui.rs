//! Every error the macros can print is pinned with its `.stderr`. (The forms that must
//! compile and run are test programs of their own: `tests/forms/`.)

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/fail/*.rs");
}
