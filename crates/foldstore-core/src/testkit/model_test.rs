//! placeholder
/// placeholder
pub fn run<F>(_f: F) {}
