// CUDA kernel of flexrec_C::decode_step: candidate_logits followed by pool_sample in one launch,
// never building the (B, V) logits.
//
// One block per row (128 threads = 4 warps). Each warp computes the logits of candidates
// k = warp, warp + 4, ...: common.cuh's warp_dot and round_logit, the very code candidate_logits
// runs (so the fused and unfused ops agree to the bit); the K logits
// go to shared memory. Then warp 0 samples the row as pool_sample does (one online-softmax pass)
// and writes used_out. K <= 1024 (the logits live in shared memory).
#include <torch/library.h>

#include "common.cuh"

namespace flexrec {
namespace cuda {
namespace {

constexpr int kDecodeThreads = 128;

template <typename scalar_t>
__global__ void decode_step_kernel(const scalar_t* __restrict__ hidden,
                                   const scalar_t* __restrict__ weight,
                                   const int64_t* __restrict__ ids,
                                   const scalar_t* __restrict__ bias, const bool* __restrict__ used,
                                   const at::opmath_type<scalar_t>* __restrict__ gumbel,
                                   int64_t* __restrict__ index_out,
                                   at::opmath_type<scalar_t>* __restrict__ logprob_out,
                                   bool* __restrict__ used_out, int64_t K, int64_t H, int64_t V,
                                   double temperature) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ __align__(sizeof(double)) unsigned char smem_raw[];
  acc_t* logits = reinterpret_cast<acc_t*>(smem_raw);
  const int64_t row = blockIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int n_warps = blockDim.x / kWarp;
  const scalar_t* h = hidden + row * H;
  for (int64_t k = warp; k < K; k += n_warps) {
    const int64_t id = ids[row * K + k];
    CUDA_KERNEL_ASSERT(id >= 0 && id < V && "decode_step: cand_ids out of range [0, V)");
    const acc_t dot = warp_dot<scalar_t>(h, weight + id * H, H);
    if (lane == 0) logits[k] = static_cast<acc_t>(round_logit<scalar_t>(dot, bias, id));
  }
  __syncthreads();
  if (warp != 0) return;
  warp_pool_step<acc_t>(row, K, [&](int64_t c) { return logits[c]; }, used, gumbel, temperature,
                        index_out, logprob_out, used_out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_step_cuda(
    const at::Tensor& hidden_in, const at::Tensor& weight_in, const at::Tensor& ids_in,
    const at::Tensor& used_in, const c10::optional<at::Tensor>& gumbel_in, double temperature,
    const c10::optional<at::Tensor>& bias_in) {
  const char* op = "decode_step";
  TORCH_CHECK(hidden_in.dim() == 2, op, ": hidden must be (B, H), got ", hidden_in.dim(), "-D");
  TORCH_CHECK(weight_in.dim() == 2 && weight_in.size(1) == hidden_in.size(1), op,
              ": weight must be (V, H) with H = ", hidden_in.size(1), ", got ", weight_in.sizes());
  TORCH_CHECK(ids_in.dim() == 2 && ids_in.size(0) == hidden_in.size(0), op,
              ": cand_ids must be (B, K) with B = ", hidden_in.size(0), ", got ", ids_in.sizes());
  TORCH_CHECK(ids_in.scalar_type() == at::kLong, op, ": cand_ids must be int64, got ",
              ids_in.scalar_type(), "; use .long()");
  TORCH_CHECK(used_in.sizes() == ids_in.sizes() && used_in.scalar_type() == at::kBool, op,
              ": used must be a bool tensor shaped like cand_ids ", ids_in.sizes(), ", got ",
              used_in.scalar_type(), " ", used_in.sizes());
  TORCH_CHECK(weight_in.scalar_type() == hidden_in.scalar_type(), op, ": weight is ",
              weight_in.scalar_type(), " but hidden is ", hidden_in.scalar_type(), "; cast one of them");
  TORCH_CHECK(at::isFloatingType(hidden_in.scalar_type()), op, ": hidden must be floating, got ",
              hidden_in.scalar_type());
  TORCH_CHECK(temperature > 0, op, ": temperature must be > 0, got ", temperature);
  check_cuda(hidden_in, op, "hidden");
  check_cuda(weight_in, op, "weight");
  check_cuda(ids_in, op, "cand_ids");
  check_cuda(used_in, op, "used");
  const int64_t B = hidden_in.size(0), H = hidden_in.size(1), K = ids_in.size(1);
  const int64_t V = weight_in.size(0);
  check_k_limit(K, op);
  const c10::cuda::CUDAGuard guard(hidden_in.device());
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor ids = ids_in.contiguous(), used = used_in.contiguous();
  const auto acc_type = at::toOpMathType(hidden.scalar_type());
  at::Tensor gumbel, bias;
  if (gumbel_in.has_value()) {
    check_cuda(*gumbel_in, op, "gumbel");
    TORCH_CHECK(gumbel_in->sizes() == ids.sizes(), op, ": gumbel has shape ", gumbel_in->sizes(),
                " but cand_ids has ", ids.sizes(), "; they must match");
    gumbel = gumbel_in->to(acc_type).contiguous();
  }
  if (bias_in.has_value()) {
    check_cuda(*bias_in, op, "bias");
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == V, op, ": bias must be (V,) with V = ",
                V, ", got ", bias_in->sizes());
    bias = bias_in->to(hidden.scalar_type()).contiguous();
  }
  at::Tensor index = at::empty({B}, hidden.options().dtype(at::kLong));
  at::Tensor logprob = at::empty({B}, hidden.options().dtype(acc_type));
  at::Tensor used_out = at::empty_like(used);
  if (B == 0) return {index, logprob, used_out};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "decode_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    decode_step_kernel<scalar_t><<<B, kDecodeThreads, K * sizeof(acc_t), stream>>>(
        hidden.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(),
        ids.const_data_ptr<int64_t>(), bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
        used.const_data_ptr<bool>(), gumbel.defined() ? gumbel.const_data_ptr<acc_t>() : nullptr,
        index.mutable_data_ptr<int64_t>(), logprob.mutable_data_ptr<acc_t>(),
        used_out.mutable_data_ptr<bool>(), K, H, V, temperature);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {index, logprob, used_out};
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(flexrec_C, CUDA, m) { m.impl("decode_step", &cuda::decode_step_cuda); }

}  // namespace flexrec
