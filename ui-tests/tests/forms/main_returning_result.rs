//! `#[prism::main]` on a sync main returning a Result, using `?`.

#[prism::remote]
fn echo(s: String) -> String {
    s
}

#[prism::main]
fn main() -> Result<(), prism::Error> {
    let r = echo::remote("hi".to_string());
    assert_eq!(prism::get_blocking(&r)?, "hi");
    Ok(())
}
