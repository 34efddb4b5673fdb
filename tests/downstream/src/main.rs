//! Top-5 of candle CUDA tensors through cosim, and a cosim handle on candle's own stream: the
//! two crates share one cudarc, so candle's stream and buffers are cosim's types.

use candle_core::{Device, Tensor};

fn main() -> candle_core::Result<()> {
    let dev = Device::new_cuda(0)?;
    let q = Tensor::randn(0f32, 1.0, (4, 64), &dev)?;
    let k = Tensor::randn(0f32, 1.0, (100, 64), &dev)?;
    let (values, indices) = cosim::candle::pairwise_top_k(&q, &k, 5)?;
    println!("{values}\n{indices}");
    if let Device::Cuda(cuda) = &dev {
        let gpu = cosim::cuda::Cuda::with_stream(cuda.cuda_stream()).map_err(candle_core::Error::wrap)?;
        println!("{}", gpu.describe().map_err(candle_core::Error::wrap)?);
    }
    Ok(())
}
