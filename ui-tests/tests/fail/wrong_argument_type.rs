#[prism::remote]
fn double(x: u64) -> u64 {
    x * 2
}

#[prism::remote]
fn shout(s: String) -> String {
    s.to_uppercase()
}

fn main() {
    let _ = double::remote(String::from("four"));
    let s = shout::remote(String::from("a"));
    let _ = double::remote(s);
}
