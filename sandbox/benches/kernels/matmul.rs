// Floating-point compute kernel shared by the native and the WebAssembly side of
// the benchmark: every multiply and add is an operation whose NaN result the
// deterministic engine canonicalizes. As a program (compiled to wasm32-wasip1)
// it prints a checksum of four 256×256 products.

pub fn matmul(n: usize, seed: u64) -> f64 {
    // xorshift64: the same inputs on both sides without a dependency.
    let mut s = seed;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s % 1000) as f64 / 1000.0
    };
    let a: Vec<f64> = (0..n * n).map(|_| next()).collect();
    let b: Vec<f64> = (0..n * n).map(|_| next()).collect();
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c.iter().sum()
}

#[allow(dead_code)]
fn main() {
    let mut total = 0.0;
    for seed in 1..=4 {
        total += matmul(256, seed);
    }
    println!("{total}");
}
