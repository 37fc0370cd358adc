// CUDA kernels of flexrec_C::permutation_logprob and its backward: Plackett-Luce step log-probs
// and entropies of given permutations, under exactly the masked softmax pool_sample draws from.
//
// One warp per (row b, step t), four per block. The warp marks the candidates chosen before t
// (perm[b, :t]) in its own shared-memory flags, then makes passes over the step's K logits:
// max and sum of exp (online softmax), then the entropy, then (backward) the gradient.
// K <= 1024 (the flags live in shared memory).
#include <torch/library.h>

#include "common.cuh"

namespace flexrec {
namespace cuda {
namespace {

constexpr int kStepsPerBlock = 4;

// Marks perm[b, :t] as used in this warp's flags and returns the step's (max, sum of exp).
template <typename scalar_t, typename acc_t>
__device__ void step_softmax(const scalar_t* __restrict__ x_row, const int64_t* __restrict__ perm_row,
                             int64_t t, int64_t K, acc_t t_scale, bool* flags, acc_t& m, acc_t& s) {
  const int lane = threadIdx.x % kWarp;
  for (int64_t c = lane; c < K; c += kWarp) flags[c] = false;
  __syncwarp();
  for (int64_t j = lane; j < t; j += kWarp) {
    const int64_t c = perm_row[j];
    CUDA_KERNEL_ASSERT(c >= 0 && c < K && "permutation_logprob: perm entries must be in [0, K)");
    flags[c] = true;
  }
  __syncwarp();
  m = -std::numeric_limits<acc_t>::infinity();
  s = acc_t(0);
  for (int64_t c = lane; c < K; c += kWarp) {
    if (!flags[c]) softmax_merge(m, s, static_cast<acc_t>(x_row[c]) / t_scale, acc_t(1));
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const acc_t o_m = __shfl_xor_sync(0xffffffffu, m, offset);
    const acc_t o_s = __shfl_xor_sync(0xffffffffu, s, offset);
    softmax_merge(m, s, o_m, o_s);
  }
}

// -sum_c p_c log p_c over the unused candidates of this step.
template <typename scalar_t, typename acc_t>
__device__ acc_t step_entropy(const scalar_t* __restrict__ x_row, int64_t K, acc_t t_scale,
                              const bool* flags, acc_t lse) {
  const int lane = threadIdx.x % kWarp;
  acc_t ent = acc_t(0);
  for (int64_t c = lane; c < K; c += kWarp) {
    if (flags[c]) continue;
    const acc_t logp = static_cast<acc_t>(x_row[c]) / t_scale - lse;
    ent -= exp(logp) * logp;
  }
  return warp_sum(ent);
}

template <typename scalar_t>
__global__ void permutation_logprob_kernel(const scalar_t* __restrict__ logits,
                                           const int64_t* __restrict__ perm,
                                           at::opmath_type<scalar_t>* __restrict__ logprob,
                                           at::opmath_type<scalar_t>* __restrict__ entropy,
                                           int64_t B, int64_t K, double temperature) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ bool flags_all[];
  const int warp = threadIdx.x / kWarp;
  const int64_t step = static_cast<int64_t>(blockIdx.x) * kStepsPerBlock + warp;
  if (step >= B * K) return;  // whole warps leave together
  const int64_t b = step / K, t = step % K;
  bool* flags = flags_all + warp * K;
  const acc_t t_scale = static_cast<acc_t>(temperature);
  const scalar_t* x_row = logits + (b * K + t) * K;
  // Divide, as the reference does (x / T), rather than multiply by 1/T: same rounding.
  acc_t m, s;
  step_softmax<scalar_t, acc_t>(x_row, perm + b * K, t, K, t_scale, flags, m, s);
  const acc_t lse = m + log(s);
  const acc_t ent = step_entropy<scalar_t, acc_t>(x_row, K, t_scale, flags, lse);
  if (threadIdx.x % kWarp == 0) {
    const int64_t c = perm[b * K + t];
    logprob[step] = static_cast<acc_t>(x_row[c]) / t_scale - lse;
    entropy[step] = ent;
  }
}

template <typename scalar_t>
__global__ void permutation_logprob_backward_kernel(
    const at::opmath_type<scalar_t>* __restrict__ grad_logprob,
    const at::opmath_type<scalar_t>* __restrict__ grad_entropy, const scalar_t* __restrict__ logits,
    const int64_t* __restrict__ perm, scalar_t* __restrict__ grad_logits, int64_t B, int64_t K,
    double temperature) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ bool flags_all[];
  const int warp = threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t step = static_cast<int64_t>(blockIdx.x) * kStepsPerBlock + warp;
  if (step >= B * K) return;
  const int64_t b = step / K, t = step % K;
  bool* flags = flags_all + warp * K;
  const acc_t t_scale = static_cast<acc_t>(temperature);
  const scalar_t* x_row = logits + (b * K + t) * K;
  acc_t m, s;
  step_softmax<scalar_t, acc_t>(x_row, perm + b * K, t, K, t_scale, flags, m, s);
  const acc_t lse = m + log(s);
  const acc_t H = step_entropy<scalar_t, acc_t>(x_row, K, t_scale, flags, lse);
  const acc_t gl = grad_logprob[step], ge = grad_entropy[step];
  const int64_t chosen = perm[b * K + t];
  // d logp_c / dx_j = 1[j = c] - p_j;  dH / dx_j = -p_j (log p_j + H), on unmasked j; x = logits/T.
  for (int64_t c = lane; c < K; c += kWarp) {
    acc_t g = acc_t(0);
    if (!flags[c]) {
      const acc_t logp = static_cast<acc_t>(x_row[c]) / t_scale - lse;
      const acc_t p = exp(logp);
      g = gl * ((c == chosen ? acc_t(1) : acc_t(0)) - p) - ge * p * (logp + H);
      g = g / t_scale;
    }
    grad_logits[(b * K + t) * K + c] = static_cast<scalar_t>(g);
  }
}

void check_perm_inputs(const char* op, const at::Tensor& logits, const at::Tensor& perm,
                       double temperature) {
  TORCH_CHECK(perm.dim() == 2, op, ": perm must be (B, K), got ", perm.dim(), "-D");
  const int64_t B = perm.size(0), K = perm.size(1);
  TORCH_CHECK(logits.dim() == 3 && logits.size(0) == B && logits.size(1) == K && logits.size(2) == K,
              op, ": logits must be (B, K, K) = (", B, ", ", K, ", ", K, "), got ", logits.sizes());
  TORCH_CHECK(perm.scalar_type() == at::kLong, op, ": perm must be int64, got ", perm.scalar_type(),
              "; use .long()");
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), op, ": logits must be floating, got ",
              logits.scalar_type());
  TORCH_CHECK(temperature > 0, op, ": temperature must be > 0, got ", temperature);
  check_cuda(logits, op, "logits");
  check_cuda(perm, op, "perm");
  check_k_limit(K, op);
}

std::tuple<at::Tensor, at::Tensor> permutation_logprob_cuda(const at::Tensor& logits_in,
                                                            const at::Tensor& perm_in,
                                                            double temperature) {
  check_perm_inputs("permutation_logprob", logits_in, perm_in, temperature);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), perm = perm_in.contiguous();
  const int64_t B = perm.size(0), K = perm.size(1);
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  at::Tensor logprob = at::empty({B, K}, logits.options().dtype(acc_type));
  at::Tensor entropy = at::empty({B, K}, logits.options().dtype(acc_type));
  if (B == 0) return {logprob, entropy};
  const int64_t blocks = (B * K + kStepsPerBlock - 1) / kStepsPerBlock;
  const size_t smem = kStepsPerBlock * K * sizeof(bool);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "permutation_logprob_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    permutation_logprob_kernel<scalar_t><<<blocks, kStepsPerBlock * kWarp, smem, stream>>>(
        logits.const_data_ptr<scalar_t>(), perm.const_data_ptr<int64_t>(),
        logprob.mutable_data_ptr<acc_t>(), entropy.mutable_data_ptr<acc_t>(), B, K, temperature);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {logprob, entropy};
}

at::Tensor permutation_logprob_backward_cuda(const at::Tensor& grad_logprob_in,
                                             const at::Tensor& grad_entropy_in,
                                             const at::Tensor& logits_in, const at::Tensor& perm_in,
                                             double temperature) {
  check_perm_inputs("permutation_logprob_backward", logits_in, perm_in, temperature);
  TORCH_CHECK(grad_logprob_in.sizes() == perm_in.sizes() && grad_entropy_in.sizes() == perm_in.sizes(),
              "permutation_logprob_backward: grad_logprob ", grad_logprob_in.sizes(), " and grad_entropy ",
              grad_entropy_in.sizes(), " must both be (B, K) = ", perm_in.sizes());
  check_cuda(grad_logprob_in, "permutation_logprob_backward", "grad_logprob");
  check_cuda(grad_entropy_in, "permutation_logprob_backward", "grad_entropy");
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), perm = perm_in.contiguous();
  const auto acc_type = at::toOpMathType(logits.scalar_type());
  const at::Tensor gl = grad_logprob_in.to(acc_type).contiguous();
  const at::Tensor ge = grad_entropy_in.to(acc_type).contiguous();
  const int64_t B = perm.size(0), K = perm.size(1);
  at::Tensor grad_logits = at::empty_like(logits);
  if (B == 0) return grad_logits;
  const int64_t blocks = (B * K + kStepsPerBlock - 1) / kStepsPerBlock;
  const size_t smem = kStepsPerBlock * K * sizeof(bool);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "permutation_logprob_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    permutation_logprob_backward_kernel<scalar_t><<<blocks, kStepsPerBlock * kWarp, smem, stream>>>(
        gl.const_data_ptr<acc_t>(), ge.const_data_ptr<acc_t>(), logits.const_data_ptr<scalar_t>(),
        perm.const_data_ptr<int64_t>(), grad_logits.mutable_data_ptr<scalar_t>(), B, K, temperature);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_logits;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(flexrec_C, CUDA, m) {
  m.impl("permutation_logprob", &cuda::permutation_logprob_cuda);
  m.impl("permutation_logprob_backward", &cuda::permutation_logprob_backward_cuda);
}

}  // namespace flexrec
