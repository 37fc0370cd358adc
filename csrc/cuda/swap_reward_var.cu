// CUDA kernel of flexrec_C::swap_reward_var: the variance of each position's reward under
// independent gain noise, IDCG held fixed (see flexrec/ops/reference.py). One block per row, the
// row's gains, variances and discounts in shared memory (K <= 1024).
//   causal / noncausal (kept j: j > p, or j != p; m = max(#kept, 1)):
//     Var = [ (sum_j (d_p - d_j))^2 s_p + sum_j (d_p - d_j)^2 s_j ] / m^2 / IDCG^2
//   independent: d_p^2 s_p;  sequence: sum_q d_q^2 s_q;  suffix: sum_{q>=p} d_q^2 s_q (/ IDCG^2).
#include <torch/library.h>

#include "common.cuh"

namespace flexrec {
namespace cuda {
namespace {

template <typename scalar_t, typename var_t>
__global__ void swap_reward_var_kernel(const scalar_t* __restrict__ gains,
                                       const var_t* __restrict__ gain_var,
                                       scalar_t* __restrict__ out, int64_t K, int64_t n, int mode) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(sizeof(double)) unsigned char smem_raw[];
  acc_t* g = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* s = g + K;
  acc_t* d = s + K;
  __shared__ acc_t red[kWarp];
  const int64_t row = blockIdx.x;
  for (int64_t p = threadIdx.x; p < K; p += blockDim.x) {
    g[p] = static_cast<acc_t>(gains[row * K + p]);
    // The reference casts the variances to the gains' dtype first.
    s[p] = static_cast<acc_t>(static_cast<scalar_t>(gain_var[row * K + p]));
    d[p] = discount<acc_t>(p, n);
  }
  __syncthreads();
  const acc_t inv = inverse_idcg(g, d, K, red);
  for (int64_t p = threadIdx.x; p < K; p += blockDim.x) {
    acc_t v = acc_t(0);
    switch (static_cast<Mode>(mode)) {
      case Mode::kCausal:
      case Mode::kNoncausal: {
        const bool causal = static_cast<Mode>(mode) == Mode::kCausal;
        acc_t diff_sum = acc_t(0), diff_sq_s = acc_t(0);
        for (int64_t j = causal ? p + 1 : 0; j < K; ++j) {
          if (j == p) continue;
          const acc_t diff = d[p] - d[j];
          diff_sum += diff;
          diff_sq_s += diff * diff * s[j];
        }
        const int64_t count = causal ? K - 1 - p : K - 1;
        const acc_t m = static_cast<acc_t>(count > 0 ? count : 1);
        v = (diff_sum * diff_sum * s[p] + diff_sq_s) / (m * m);
        break;
      }
      case Mode::kIndependent:
        v = d[p] * d[p] * s[p];
        break;
      case Mode::kSequence:
        for (int64_t q = 0; q < K; ++q) v += d[q] * d[q] * s[q];
        break;
      case Mode::kSuffix:
        for (int64_t q = p; q < K; ++q) v += d[q] * d[q] * s[q];
        break;
    }
    out[row * K + p] = static_cast<scalar_t>(v * inv * inv);
  }
}

at::Tensor swap_reward_var_cuda(const at::Tensor& gains_in, const at::Tensor& var_in, int64_t k,
                                c10::string_view mode_name) {
  check_gains(gains_in, "swap_reward_var");
  check_cuda(gains_in, "swap_reward_var", "gains");
  check_cuda(var_in, "swap_reward_var", "gain_var");
  TORCH_CHECK(var_in.sizes() == gains_in.sizes(), "swap_reward_var: gain_var has shape ",
              var_in.sizes(), " but gains has ", gains_in.sizes(), "; they must match");
  TORCH_CHECK(var_in.get_device() == gains_in.get_device(),
              "swap_reward_var: gains and gain_var are on different devices; move them together");
  const Mode mode = parse_mode(mode_name);
  const int64_t B = gains_in.size(0), K = gains_in.size(1);
  check_k_limit(K, "swap_reward_var");
  const c10::cuda::CUDAGuard guard(gains_in.device());
  const at::Tensor gains = gains_in.contiguous();
  // Variances in the gains' dtype, as the reference does (a no-op when they already match).
  const at::Tensor var = var_in.to(gains.scalar_type()).contiguous();
  at::Tensor out = at::empty_like(gains);
  if (B == 0) return out;
  const int64_t n = (k <= 0 || k > K) ? K : k;
  const int threads = row_threads(K);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gains.scalar_type(), "swap_reward_var_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = 3 * K * sizeof(acc_t);
    swap_reward_var_kernel<scalar_t, scalar_t><<<B, threads, smem, stream>>>(
        gains.const_data_ptr<scalar_t>(), var.const_data_ptr<scalar_t>(),
        out.mutable_data_ptr<scalar_t>(), K, n, static_cast<int>(mode));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(flexrec_C, CUDA, m) { m.impl("swap_reward_var", &cuda::swap_reward_var_cuda); }

}  // namespace flexrec
