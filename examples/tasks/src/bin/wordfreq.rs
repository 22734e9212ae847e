//! Word frequencies of a text (task type `data-processing`).
//!
//! `wordfreq [FILE] [--top K]`: reads FILE (for example `/input/text.txt`,
//! the read-only input directory) or, without it, standard input. A word is
//! a maximal run of alphanumeric characters or apostrophes inside a word,
//! lower-cased. Prints the totals, then the K most frequent words (ties in
//! alphabetical order), one `count word` per line.

use std::collections::BTreeMap;
use std::io::Read as _;

use askee_example_tasks::arg;

fn main() {
    let top: usize = arg("--top", 10usize).unwrap_or_else(|e| fail(&e));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && (*i == 0 || args[i - 1] != "--top"))
        .map(|(_, a)| a.clone());
    let mut text = String::new();
    let read = match &file {
        Some(path) => std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)),
        None => std::io::stdin().read_to_string(&mut text),
    };
    if let Err(e) = read {
        fail(&format!(
            "cannot read {}: {e}",
            file.as_deref().unwrap_or("standard input")
        ));
    }
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for word in words(&text) {
        total += 1;
        *counts.entry(word).or_default() += 1;
    }
    let mut ranked: Vec<(&String, &u64)> = counts.iter().collect();
    // BTreeMap order is alphabetical; a stable sort by count keeps it for ties.
    ranked.sort_by(|a, b| b.1.cmp(a.1));
    println!("words {total}");
    println!("distinct {}", counts.len());
    for (word, n) in ranked.into_iter().take(top) {
        println!("{n} {word}");
    }
}

/// Lower-cased words: runs of alphanumerics, with apostrophes kept inside.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || (c == '\'' && !cur.is_empty()) {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur).trim_end_matches('\'').to_owned());
        }
    }
    if !cur.is_empty() {
        out.push(cur.trim_end_matches('\'').to_owned());
    }
    out
}

fn fail(why: &str) -> ! {
    eprintln!("wordfreq: {why}");
    std::process::exit(2)
}
