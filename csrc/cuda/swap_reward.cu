// CUDA kernel of flexrec_C::swap_reward: one block per row, the row's gains and discounts in
// shared memory, O(K^2 / threads) work per thread (K <= 1024).
//
// IDCG@n without a sort: each gain's rank in the descending order is counted pairwise
// (rank_p = #{j: g_j > g_p, or g_j == g_p and j < p}), and IDCG = sum_p g_p d[rank_p]; equal gains
// are interchangeable, so ties cannot change it. The causal/noncausal sums are taken term by term,
// (g_p - g_j)(d_p - d_j), with no suffix-sum cancellation.
#include <torch/library.h>

#include "common.cuh"

namespace flexrec {
namespace cuda {
namespace {

template <typename scalar_t>
__global__ void swap_reward_kernel(const scalar_t* __restrict__ gains, scalar_t* __restrict__ out,
                                   int64_t K, int64_t n, int mode) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(sizeof(double)) unsigned char smem_raw[];
  acc_t* g = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* d = g + K;
  __shared__ acc_t red[kWarp];
  const int64_t row = blockIdx.x;
  for (int64_t p = threadIdx.x; p < K; p += blockDim.x) {
    g[p] = static_cast<acc_t>(gains[row * K + p]);
    d[p] = discount<acc_t>(p, n);
  }
  __syncthreads();
  const acc_t inv = inverse_idcg(g, d, K, red);
  for (int64_t p = threadIdx.x; p < K; p += blockDim.x) {
    acc_t r = acc_t(0);
    switch (static_cast<Mode>(mode)) {
      case Mode::kCausal:
      case Mode::kNoncausal: {
        const bool causal = static_cast<Mode>(mode) == Mode::kCausal;
        acc_t total = acc_t(0);
        for (int64_t j = causal ? p + 1 : 0; j < K; ++j) total += (g[p] - g[j]) * (d[p] - d[j]);
        const int64_t count = causal ? K - 1 - p : K - 1;
        r = total / static_cast<acc_t>(count > 0 ? count : 1);
        break;
      }
      case Mode::kIndependent:
        r = g[p] * d[p];
        break;
      case Mode::kSequence:
        for (int64_t q = 0; q < K; ++q) r += g[q] * d[q];
        break;
      case Mode::kSuffix:
        for (int64_t q = p; q < K; ++q) r += g[q] * d[q];
        break;
    }
    out[row * K + p] = static_cast<scalar_t>(r * inv);
  }
}

at::Tensor swap_reward_cuda(const at::Tensor& gains_in, int64_t k, c10::string_view mode_name) {
  check_gains(gains_in, "swap_reward");
  check_cuda(gains_in, "swap_reward", "gains");
  const Mode mode = parse_mode(mode_name);
  const int64_t B = gains_in.size(0), K = gains_in.size(1);
  check_k_limit(K, "swap_reward");
  const c10::cuda::CUDAGuard guard(gains_in.device());
  const at::Tensor gains = gains_in.contiguous();
  at::Tensor out = at::empty_like(gains);
  if (B == 0) return out;
  const int64_t n = (k <= 0 || k > K) ? K : k;
  const int threads = row_threads(K);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gains.scalar_type(), "swap_reward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = 2 * K * sizeof(acc_t);
    swap_reward_kernel<scalar_t><<<B, threads, smem, stream>>>(
        gains.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), K, n,
        static_cast<int>(mode));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(flexrec_C, CUDA, m) { m.impl("swap_reward", &cuda::swap_reward_cuda); }

}  // namespace flexrec
