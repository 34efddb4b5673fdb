//! cosim inside a candle pipeline: two small sets of "embeddings" (random tensors here), the
//! top-5 keys of every query and the greedy set similarity of the two sets, on a CUDA tensor
//! device when candle has one (feature `candle-cuda` and a GPU), else on the CPU.
//!
//! ```sh
//! cargo run --release --example candle --features candle           # CPU tensors
//! cargo run --release --example candle --features candle-cuda      # CUDA if usable
//! ```

use anyhow::Result;
use candle_core::{Device, Tensor};

fn device() -> Device {
    #[cfg(feature = "candle-cuda")]
    match Device::new_cuda(0) {
        Ok(d) => return d,
        Err(e) => eprintln!("candle CUDA device not usable ({e}); using the CPU"),
    }
    Device::Cpu
}

fn main() -> Result<()> {
    let dev = device();
    let (queries, keys, dim) = (6, 1000, 64);
    let q = Tensor::randn(0f32, 1.0, (queries, dim), &dev)?;
    let k = Tensor::randn(0f32, 1.0, (keys, dim), &dev)?;
    // Plant each query among the keys, slightly perturbed: it must come out on top.
    let planted = (q.clone() + Tensor::randn(0f32, 0.05, (queries, dim), &dev)?)?;
    let k = Tensor::cat(&[&k.narrow(0, 0, keys - queries)?, &planted], 0)?;

    let (values, indices) = cosim::candle::pairwise_top_k(&q, &k, 5)?;
    println!("device: {:?}", dev.location());
    let (values, indices) = (values.to_vec2::<f32>()?, indices.to_vec2::<u32>()?);
    for (i, (v, ix)) in values.iter().zip(&indices).enumerate() {
        let row: Vec<String> = v
            .iter()
            .zip(ix)
            .map(|(v, j)| format!("{j}:{v:.3}"))
            .collect();
        println!("query {i}: top-5 {}", row.join(" "));
        anyhow::ensure!(
            ix[0] as usize == keys - queries + i,
            "query {i} did not find itself"
        );
    }

    // How similar are the two sets as wholes? Greedy matching, as BERTScore scores sentences.
    let s = cosim::candle::set_similarity(&q, &planted)?;
    println!(
        "set similarity of the queries and their perturbed copies: P {:.4} R {:.4} F1 {:.4}",
        s.precision.to_scalar::<f32>()?,
        s.recall.to_scalar::<f32>()?,
        s.f1.to_scalar::<f32>()?
    );
    Ok(())
}
