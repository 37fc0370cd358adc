// CUDA kernels of flexrec_C::candidate_logits and its backward: the candidate-restricted LM head
// out[n, k] = hidden[n] . weight[cand_ids[n, k]] (+ bias[cand_ids[n, k]]), never (N, V).
//
// Forward: one warp per (n, k) pair (four per block): common.cuh's warp_dot (the lanes stride over
// H, then a warp sum) and round_logit (the product rounded to the output dtype before the bias is
// added, as the reference, einsum then + bias, does), both shared with the fused decode_step.
// Backward: one block per row n, threads over H; per k, grad_hidden accumulates in registers and
// grad[n, k] * hidden[n] is atomically added into grad_weight's row cand_ids[n, k] (so rows that
// share candidates accumulate correctly, in an unspecified order). The atomics accumulate in
// float32 (float64 for float64): bf16/half weights get a float32 (V, H) buffer, cast once.
#include <ATen/cuda/Atomic.cuh>
#include <torch/library.h>

#include "common.cuh"

namespace flexrec {
namespace cuda {
namespace {

constexpr int kPairsPerBlock = 4;
constexpr int kBackwardThreads = 256;

template <typename scalar_t>
__global__ void candidate_logits_kernel(const scalar_t* __restrict__ hidden,
                                        const scalar_t* __restrict__ weight,
                                        const int64_t* __restrict__ ids,
                                        const scalar_t* __restrict__ bias,
                                        scalar_t* __restrict__ out, int64_t N, int64_t K,
                                        int64_t H, int64_t V) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * kPairsPerBlock + threadIdx.x / kWarp;
  if (pair >= N * K) return;
  const int64_t n = pair / K;
  const int64_t id = ids[pair];
  CUDA_KERNEL_ASSERT(id >= 0 && id < V && "candidate_logits: cand_ids out of range [0, V)");
  const acc_t dot = warp_dot<scalar_t>(hidden + n * H, weight + id * H, H);
  if (threadIdx.x % kWarp == 0) out[pair] = round_logit<scalar_t>(dot, bias, id);
}

template <typename scalar_t>
__global__ void candidate_logits_backward_kernel(
    const scalar_t* __restrict__ grad, const scalar_t* __restrict__ hidden,
    const scalar_t* __restrict__ weight, const int64_t* __restrict__ ids,
    scalar_t* __restrict__ grad_hidden, at::opmath_type<scalar_t>* __restrict__ grad_weight,
    at::opmath_type<scalar_t>* __restrict__ grad_bias, int64_t K, int64_t H, int64_t V) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(sizeof(double)) unsigned char smem_raw[];
  int64_t* id = reinterpret_cast<int64_t*>(smem_raw);  // first: 8-byte aligned
  acc_t* g = reinterpret_cast<acc_t*>(id + K);
  const int64_t n = blockIdx.x;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    g[k] = static_cast<acc_t>(grad[n * K + k]);
    id[k] = ids[n * K + k];
    CUDA_KERNEL_ASSERT(id[k] >= 0 && id[k] < V && "candidate_logits: cand_ids out of range [0, V)");
    if (grad_bias != nullptr) gpuAtomicAdd(grad_bias + id[k], g[k]);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const acc_t h = static_cast<acc_t>(hidden[n * H + i]);
    acc_t gh = acc_t(0);
    for (int64_t k = 0; k < K; ++k) {
      gh += g[k] * static_cast<acc_t>(weight[id[k] * H + i]);
      gpuAtomicAdd(grad_weight + id[k] * H + i, g[k] * h);
    }
    grad_hidden[n * H + i] = static_cast<scalar_t>(gh);
  }
}

void check_head_inputs(const char* op, const at::Tensor& hidden, const at::Tensor& weight,
                       const at::Tensor& cand_ids) {
  TORCH_CHECK(hidden.dim() == 2, op, ": hidden must be (N, H), got ", hidden.dim(), "-D");
  TORCH_CHECK(weight.dim() == 2, op, ": weight must be (V, H), got ", weight.dim(), "-D");
  TORCH_CHECK(cand_ids.dim() == 2 && cand_ids.size(0) == hidden.size(0), op,
              ": cand_ids must be (N, K) with N = hidden.size(0) = ", hidden.size(0), ", got ",
              cand_ids.sizes());
  TORCH_CHECK(weight.size(1) == hidden.size(1), op, ": weight is ", weight.sizes(),
              " but hidden has H = ", hidden.size(1), "; weight must be (V, H)");
  TORCH_CHECK(cand_ids.scalar_type() == at::kLong, op, ": cand_ids must be int64, got ",
              cand_ids.scalar_type(), "; use .long()");
  TORCH_CHECK(weight.scalar_type() == hidden.scalar_type(), op, ": weight is ",
              weight.scalar_type(), " but hidden is ", hidden.scalar_type(), "; cast one of them");
  TORCH_CHECK(at::isFloatingType(hidden.scalar_type()), op, ": hidden must be floating, got ",
              hidden.scalar_type());
  check_cuda(hidden, op, "hidden");
  check_cuda(weight, op, "weight");
  check_cuda(cand_ids, op, "cand_ids");
}

at::Tensor candidate_logits_cuda(const at::Tensor& hidden_in, const at::Tensor& weight_in,
                                 const at::Tensor& ids_in, const c10::optional<at::Tensor>& bias_in) {
  check_head_inputs("candidate_logits", hidden_in, weight_in, ids_in);
  const c10::cuda::CUDAGuard guard(hidden_in.device());
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor ids = ids_in.contiguous();
  at::Tensor bias;
  if (bias_in.has_value()) {
    check_cuda(*bias_in, "candidate_logits", "bias");
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == weight.size(0),
                "candidate_logits: bias must be (V,) with V = ", weight.size(0), ", got ", bias_in->sizes());
    bias = bias_in->to(hidden.scalar_type()).contiguous();
  }
  const int64_t N = hidden.size(0), H = hidden.size(1), K = ids.size(1), V = weight.size(0);
  at::Tensor out = at::empty({N, K}, hidden.options());
  if (N * K == 0) return out;
  const int64_t blocks = (N * K + kPairsPerBlock - 1) / kPairsPerBlock;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "candidate_logits_cuda", [&] {
    candidate_logits_kernel<scalar_t><<<blocks, kPairsPerBlock * kWarp, 0, stream>>>(
        hidden.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
        ids.const_data_ptr<int64_t>(), bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
        out.mutable_data_ptr<scalar_t>(), N, K, H, V);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> candidate_logits_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& hidden_in, const at::Tensor& weight_in,
    const at::Tensor& ids_in, bool has_bias) {
  check_head_inputs("candidate_logits_backward", hidden_in, weight_in, ids_in);
  check_cuda(grad_in, "candidate_logits_backward", "grad");
  TORCH_CHECK(grad_in.sizes() == ids_in.sizes(), "candidate_logits_backward: grad has shape ",
              grad_in.sizes(), " but cand_ids has ", ids_in.sizes(), "; they must match");
  const c10::cuda::CUDAGuard guard(hidden_in.device());
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor ids = ids_in.contiguous();
  const at::Tensor grad = grad_in.to(hidden.scalar_type()).contiguous();
  const int64_t N = hidden.size(0), H = hidden.size(1), K = ids.size(1), V = weight.size(0);
  TORCH_CHECK(K <= kMaxK, "candidate_logits_backward (CUDA kernel) supports K <= ", kMaxK,
              ", got K = ", K, "; use FLEXREC_BACKEND=triton or ref for larger pools");
  const auto acc_type = at::toOpMathType(hidden.scalar_type());
  at::Tensor grad_hidden = at::zeros_like(hidden);
  at::Tensor grad_weight = at::zeros({V, H}, hidden.options().dtype(acc_type));
  at::Tensor grad_bias = has_bias ? at::zeros({V}, hidden.options().dtype(acc_type))
                                  : at::empty({0}, grad_in.options());
  if (N * K > 0) {
    auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "candidate_logits_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const size_t smem = K * (sizeof(acc_t) + sizeof(int64_t));
      candidate_logits_backward_kernel<scalar_t><<<N, kBackwardThreads, smem, stream>>>(
          grad.const_data_ptr<scalar_t>(), hidden.const_data_ptr<scalar_t>(),
          weight.const_data_ptr<scalar_t>(), ids.const_data_ptr<int64_t>(),
          grad_hidden.mutable_data_ptr<scalar_t>(), grad_weight.mutable_data_ptr<acc_t>(),
          has_bias ? grad_bias.mutable_data_ptr<acc_t>() : nullptr, K, H, V);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  if (has_bias) grad_bias = grad_bias.to(grad_in.scalar_type());
  return {grad_hidden, grad_weight.to(weight.scalar_type()), grad_bias};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(flexrec_C, CUDA, m) {
  m.impl("candidate_logits", &cuda::candidate_logits_cuda);
  m.impl("candidate_logits_backward", &cuda::candidate_logits_backward_cuda);
}

}  // namespace flexrec
