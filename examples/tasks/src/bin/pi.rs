//! Monte Carlo estimate of π (task type `scientific-compute`).
//!
//! `pi --seed S --samples N`: draws N points in the unit square from a
//! SplitMix64 stream seeded with S and counts those inside the quarter
//! circle, in exact integer arithmetic (x, y are 32-bit integers, the test
//! is x² + y² < 2⁶⁴ in u128), so every honest replica agrees bit for bit.

use askee_example_tasks::{SplitMix64, arg};

fn main() {
    let (seed, samples) = match (arg("--seed", 1u64), arg("--samples", 1_000_000u64)) {
        (Ok(s), Ok(n)) if n > 0 => (s, n),
        (Err(e), _) | (_, Err(e)) => fail(&e),
        _ => fail("--samples must be positive"),
    };
    let mut rng = SplitMix64::new(seed);
    let mut inside = 0u64;
    for _ in 0..samples {
        let r = rng.next_u64();
        let (x, y) = (u128::from(r >> 32), u128::from(r & 0xffff_ffff));
        if x * x + y * y < 1u128 << 64 {
            inside += 1;
        }
    }
    let estimate = 4.0 * inside as f64 / samples as f64;
    println!("seed {seed}");
    println!("samples {samples}");
    println!("inside {inside}");
    println!("pi {estimate:.6}");
}

fn fail(why: &str) -> ! {
    eprintln!("pi: {why}");
    std::process::exit(2)
}
