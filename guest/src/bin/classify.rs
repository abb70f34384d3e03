//! `wasi-lab-classify`: the article's command-style guest.
//!
//! ```text
//! wasmtime run --dir=. wasi-lab-classify.wasm -- [--model PATH] [--image PATH]
//!     [--mode article|efficientnet|inception] [--top K]
//! ```
//!
//! Files are read through WASI, so the host must *preopen* their directory (`--dir=.`);
//! without it every open fails, and we say so instead of panicking. Exit codes: 0 success,
//! 1 the model or image is bad, 2 usage error or unreadable file.

use std::process::exit;
use wasi_lab_guest::engine::Model;
use wasi_lab_guest::preprocess::{self, Mode};

const USAGE: &str = "usage: wasi-lab-classify [--model PATH] [--image PATH] [--mode article|efficientnet|inception] [--top K]
  defaults: --model mobilenet_v2_1.4_224_frozen.pb --image grace_hopper.jpg --mode article --top 5
  (positional MODEL and IMAGE are accepted too, as in the article)";

struct Args {
    model: String,
    image: String,
    mode: Mode,
    top: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        model: "mobilenet_v2_1.4_224_frozen.pb".into(),
        image: "grace_hopper.jpg".into(),
        mode: Mode::Article,
        top: 5,
    };
    let mut positional = 0;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{} needs a value", name));
        match a.as_str() {
            "-h" | "--help" => {
                println!("{}", USAGE);
                exit(0);
            }
            "--model" => args.model = value("--model")?,
            "--image" => args.image = value("--image")?,
            "--mode" => {
                args.mode = match value("--mode")?.as_str() {
                    "article" => Mode::Article,
                    "efficientnet" => Mode::EfficientNet,
                    "inception" => Mode::Inception,
                    other => {
                        return Err(format!(
                            "unknown mode '{}' (article, efficientnet, inception)",
                            other
                        ))
                    }
                }
            }
            "--top" => {
                let v = value("--top")?;
                args.top = v
                    .parse()
                    .ok()
                    .filter(|&k: &usize| k >= 1)
                    .ok_or_else(|| format!("--top needs a positive integer, got '{}'", v))?;
            }
            s if s.starts_with('-') => return Err(format!("unknown option '{}'", s)),
            s => {
                match positional {
                    0 => args.model = s.to_string(),
                    1 => args.image = s.to_string(),
                    _ => return Err(format!("unexpected argument '{}'", s)),
                }
                positional += 1;
            }
        }
    }
    Ok(args)
}

/// Read a file, explaining the WASI sandbox when the directory was not preopened.
fn read(path: &str, what: &str) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read the {} '{}': {}", what, path, e);
            eprintln!(
                "hint: a WASI guest only sees directories the host preopens; run it with --dir, \
                 e.g.\n  wasmtime run --dir=. wasi-lab-classify.wasm -- --model MODEL.pb --image \
                 IMAGE.jpg"
            );
            exit(2);
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}\n{}", e, USAGE);
            exit(2);
        }
    };
    let model_bytes = read(&args.model, "model");
    let image = read(&args.image, "image");
    let fail = |(_, msg): (wasi_lab_guest::abi::ErrorCode, String)| -> ! {
        eprintln!("error: {}", msg);
        exit(1);
    };
    let mut model = Model::load(&model_bytes, None).unwrap_or_else(|e| fail(e));
    let (_, _, tensor) = preprocess::preprocess(&image, args.mode).unwrap_or_else(|e| fail(e));
    let probs = model.run(&tensor).unwrap_or_else(|e| fail(e)).to_vec();
    // The article's label number: 1-based, where a 1001-class output has background at 0.
    let offset = if probs.len() == 1001 { 0 } else { 1 };
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| {
        probs[b]
            .partial_cmp(&probs[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    match order.first() {
        Some(&best) => println!("result: Some(({}, {}))", probs[best], best + offset),
        None => println!("result: None"),
    }
    for (rank, &i) in order.iter().take(args.top).enumerate() {
        println!(
            "{:>2}. class {:>4}  p={:.6}",
            rank + 1,
            i + offset,
            probs[i]
        );
    }
}
