//! Deterministic SGD training of a linear model (task type `ml-training`).
//!
//! `sgd --seed S --epochs E --samples N --rate R`: makes N points
//! y = 3·x − 2 + noise (x uniform in [−1, 1), noise uniform in [−0.1, 0.1))
//! from a SplitMix64 stream seeded with S, then fits w, b by stochastic
//! gradient descent on the squared error, visiting the points in an order
//! shuffled by the same stream each epoch. Prints the mean squared error
//! after every epoch, then the fitted parameters. Plain IEEE f64
//! arithmetic in a fixed order (no threads, no fused operations): honest
//! replicas agree bit for bit.

use askee_example_tasks::{SplitMix64, arg};

fn main() {
    let parsed = (|| -> Result<(u64, u32, usize, f64), String> {
        Ok((
            arg("--seed", 7u64)?,
            arg("--epochs", 10u32)?,
            arg("--samples", 128usize)?,
            arg("--rate", 0.005f64)?,
        ))
    })();
    let (seed, epochs, samples, rate) = parsed.unwrap_or_else(|e| fail(&e));
    if samples == 0 || !(rate > 0.0 && rate < 1.0) {
        fail("--samples must be positive and --rate in (0, 1)");
    }
    let mut rng = SplitMix64::new(seed);
    let data: Vec<(f64, f64)> = (0..samples)
        .map(|_| {
            let x = rng.next_f64() * 2.0 - 1.0;
            let noise = (rng.next_f64() - 0.5) * 0.2;
            (x, 3.0 * x - 2.0 + noise)
        })
        .collect();
    let loss = |w: f64, b: f64| {
        data.iter()
            .map(|&(x, y)| {
                let e = w * x + b - y;
                e * e
            })
            .sum::<f64>()
            / data.len() as f64
    };
    let (mut w, mut b) = (0.0f64, 0.0f64);
    let mut order: Vec<usize> = (0..data.len()).collect();
    println!("seed {seed}");
    println!("epoch 0 loss {:.6}", loss(w, b));
    for epoch in 1..=epochs {
        // Fisher–Yates with the seeded stream.
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &i in &order {
            let (x, y) = data[i];
            let e = w * x + b - y;
            w -= rate * 2.0 * e * x;
            b -= rate * 2.0 * e;
        }
        println!("epoch {epoch} loss {:.6}", loss(w, b));
    }
    println!("w {w:.4}");
    println!("b {b:.4}");
}

fn fail(why: &str) -> ! {
    eprintln!("sgd: {why}");
    std::process::exit(2)
}
