// Compute kernel shared by the native and the WebAssembly side of the benchmark.
// As a program (compiled to wasm32-wasip1) it prints the count of primes below N.

pub fn sieve(n: usize) -> u32 {
    let mut composite = vec![false; n];
    let mut count = 0;
    let mut i = 2;
    while i < n {
        if !composite[i] {
            count += 1;
            let mut j = i.saturating_mul(i);
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
        i += 1;
    }
    count
}

#[allow(dead_code)]
fn main() {
    let mut total = 0;
    for _ in 0..20 {
        total += sieve(2_000_000);
    }
    println!("{total}");
}
