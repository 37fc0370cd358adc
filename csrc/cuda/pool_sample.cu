// CUDA kernel of flexrec_C::pool_sample: one warp per row (four rows per 128-thread block) scales
// by 1/T, masks used candidates, takes the Gumbel-max argmax (lowest index on ties) and the
// log-softmax at the chosen candidate in one pass (online softmax), then writes used_out.
// Any K works (each lane strides over the row).
#include <torch/library.h>

#include "common.cuh"

namespace flexrec {
namespace cuda {
namespace {

constexpr int kRowsPerBlock = 4;

template <typename scalar_t>
__global__ void pool_sample_kernel(const scalar_t* __restrict__ logits, const bool* __restrict__ used,
                                   const at::opmath_type<scalar_t>* __restrict__ gumbel,
                                   int64_t* __restrict__ index_out,
                                   at::opmath_type<scalar_t>* __restrict__ logprob_out,
                                   bool* __restrict__ used_out, int64_t B, int64_t K,
                                   double temperature) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= B) return;  // whole warps leave together
  const scalar_t* l = logits + row * K;
  warp_pool_step<acc_t>(row, K, [&](int64_t c) { return static_cast<acc_t>(l[c]); }, used, gumbel,
                        temperature, index_out, logprob_out, used_out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pool_sample_cuda(
    const at::Tensor& logits_in, const at::Tensor& used_in, const c10::optional<at::Tensor>& gumbel_in,
    double temperature) {
  TORCH_CHECK(logits_in.dim() == 2, "pool_sample: logits must be (B, K), got ", logits_in.dim(), "-D");
  TORCH_CHECK(logits_in.size(1) >= 1, "pool_sample: K = 0 candidates; a pool needs K >= 1");
  TORCH_CHECK(at::isFloatingType(logits_in.scalar_type()), "pool_sample: logits must be floating, got ",
              logits_in.scalar_type());
  TORCH_CHECK(used_in.sizes() == logits_in.sizes() && used_in.scalar_type() == at::kBool,
              "pool_sample: used must be a bool tensor shaped like logits ", logits_in.sizes(),
              ", got ", used_in.scalar_type(), " ", used_in.sizes());
  TORCH_CHECK(temperature > 0, "pool_sample: temperature must be > 0, got ", temperature);
  check_cuda(logits_in, "pool_sample", "logits");
  check_cuda(used_in, "pool_sample", "used");
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor used = used_in.contiguous();
  const int64_t B = logits.size(0), K = logits.size(1);
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  at::Tensor gumbel;
  if (gumbel_in.has_value()) {
    check_cuda(*gumbel_in, "pool_sample", "gumbel");
    TORCH_CHECK(gumbel_in->sizes() == logits.sizes(), "pool_sample: gumbel has shape ",
                gumbel_in->sizes(), " but logits has ", logits.sizes(), "; they must match");
    gumbel = gumbel_in->to(acc_type).contiguous();
  }
  at::Tensor index = at::empty({B}, logits.options().dtype(at::kLong));
  at::Tensor logprob = at::empty({B}, logits.options().dtype(acc_type));
  at::Tensor used_out = at::empty_like(used);
  if (B == 0) return {index, logprob, used_out};
  const int64_t blocks = (B + kRowsPerBlock - 1) / kRowsPerBlock;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "pool_sample_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    pool_sample_kernel<scalar_t><<<blocks, kRowsPerBlock * kWarp, 0, stream>>>(
        logits.const_data_ptr<scalar_t>(), used.const_data_ptr<bool>(),
        gumbel.defined() ? gumbel.const_data_ptr<acc_t>() : nullptr,
        index.mutable_data_ptr<int64_t>(), logprob.mutable_data_ptr<acc_t>(),
        used_out.mutable_data_ptr<bool>(), B, K, temperature);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {index, logprob, used_out};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(flexrec_C, CUDA, m) { m.impl("pool_sample", &cuda::pool_sample_cuda); }

}  // namespace flexrec
