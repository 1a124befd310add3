//! Writes completions/ and man/ under the directory given (default: the current one).
//! Run through `scripts/generate`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).unwrap_or_else(|| ".".into());
    rmqlab::generate::write_all(std::path::Path::new(&dir))
}
