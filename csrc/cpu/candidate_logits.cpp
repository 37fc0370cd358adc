// CPU kernels of flexrec_C::candidate_logits and its backward: the candidate-restricted LM head
// out[n, k] = hidden[n] . weight[cand_ids[n, k]] (+ bias[cand_ids[n, k]]); never builds (N, V).
// Dot products accumulate in float (double for double). The backward's grad_weight is a
// scatter-add; threads own disjoint ranges of vocabulary rows, so it needs no atomics and is
// deterministic.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common.h"

namespace flexrec {

namespace {

void check_head(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& cand_ids) {
  TORCH_CHECK(hidden.dim() == 2, "hidden must be 2-D (N, H), got ", hidden.sizes());
  TORCH_CHECK(weight.dim() == 2, "weight must be 2-D (V, H), got ", weight.sizes());
  TORCH_CHECK(cand_ids.dim() == 2 && cand_ids.size(0) == hidden.size(0),
              "cand_ids must be (N, K) with N = hidden.size(0) = ", hidden.size(0), ", got ",
              cand_ids.sizes());
  TORCH_CHECK(cand_ids.size(1) >= 1, "cand_ids has K = 0 candidates; a pool needs K >= 1");
  TORCH_CHECK(hidden.size(1) == weight.size(1), "hidden has H = ", hidden.size(1),
              " but weight has H = ", weight.size(1), "; they must match");
  TORCH_CHECK(cand_ids.scalar_type() == at::kLong, "cand_ids must be int64, got ",
              cand_ids.scalar_type(), "; convert with cand_ids.long()");
  TORCH_CHECK(at::isFloatingType(hidden.scalar_type()) && hidden.scalar_type() == weight.scalar_type(),
              "hidden and weight must be floating tensors of one dtype, got ", hidden.scalar_type(),
              " and ", weight.scalar_type(), "; cast one of them");
  TORCH_CHECK(hidden.device().is_cpu() && weight.device().is_cpu() && cand_ids.device().is_cpu(),
              "candidate_logits (C++ CPU kernel) needs CPU tensors");
  if (cand_ids.numel() > 0) {
    const auto [lo, hi] = at::aminmax(cand_ids);
    const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
    TORCH_CHECK(lo_v >= 0 && hi_v < weight.size(0), "cand_ids must lie in [0, V = ", weight.size(0),
                "), got values in [", lo_v, ", ", hi_v, "]; check the slot-token ids");
  }
}

at::Tensor candidate_logits_cpu(const at::Tensor& hidden_in, const at::Tensor& weight_in,
                                const at::Tensor& cand_ids_in, const c10::optional<at::Tensor>& bias_in) {
  check_head(hidden_in, weight_in, cand_ids_in);
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  if (has_bias) {
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == weight_in.size(0), "bias must be (V,) = (",
                weight_in.size(0), ",), got ", bias_in->sizes());
    TORCH_CHECK(bias_in->scalar_type() == weight_in.scalar_type(), "bias must have weight's dtype ",
                weight_in.scalar_type(), ", got ", bias_in->scalar_type());
  }
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor cand_ids = cand_ids_in.contiguous();
  const at::Tensor bias = has_bias ? bias_in->contiguous() : at::Tensor();
  const int64_t N = hidden.size(0), H = hidden.size(1), K = cand_ids.size(1);
  at::Tensor out = at::empty({N, K}, hidden.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "candidate_logits_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* h_ptr = hidden.const_data_ptr<scalar_t>();
    const scalar_t* w_ptr = weight.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = has_bias ? bias.const_data_ptr<scalar_t>() : nullptr;
    const int64_t* id_ptr = cand_ids.const_data_ptr<int64_t>();
    scalar_t* o_ptr = out.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, K * H));
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> h(H);
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t j = 0; j < H; ++j) h[j] = static_cast<acc_t>(h_ptr[n * H + j]);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t id = id_ptr[n * K + k];
          const scalar_t* w = w_ptr + id * H;
          acc_t dot = dot_product(h.data(), w, H);
          if (b_ptr != nullptr) dot += static_cast<acc_t>(b_ptr[id]);
          o_ptr[n * K + k] = static_cast<scalar_t>(dot);
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> candidate_logits_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& hidden_in, const at::Tensor& weight_in,
    const at::Tensor& cand_ids_in, bool has_bias) {
  check_head(hidden_in, weight_in, cand_ids_in);
  TORCH_CHECK(grad_in.sizes() == cand_ids_in.sizes(), "grad has shape ", grad_in.sizes(),
              " but cand_ids has ", cand_ids_in.sizes(), "; they must match");
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor cand_ids = cand_ids_in.contiguous();
  const int64_t N = hidden.size(0), H = hidden.size(1), K = cand_ids.size(1), V = weight.size(0);
  at::Tensor grad_hidden = at::empty_like(hidden);
  at::Tensor grad_weight, grad_bias;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "candidate_logits_backward_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    const at::Tensor grad = grad_in.to(acc_dtype).contiguous();
    at::Tensor gw_acc = at::zeros({V, H}, hidden.options().dtype(acc_dtype));
    at::Tensor gb_acc = at::zeros({has_bias ? V : 0}, hidden.options().dtype(acc_dtype));
    const acc_t* g_ptr = grad.const_data_ptr<acc_t>();
    const scalar_t* h_ptr = hidden.const_data_ptr<scalar_t>();
    const scalar_t* w_ptr = weight.const_data_ptr<scalar_t>();
    const int64_t* id_ptr = cand_ids.const_data_ptr<int64_t>();
    scalar_t* gh_ptr = grad_hidden.mutable_data_ptr<scalar_t>();
    acc_t* gw_ptr = gw_acc.mutable_data_ptr<acc_t>();
    acc_t* gb_ptr = has_bias ? gb_acc.mutable_data_ptr<acc_t>() : nullptr;
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, K * H));
    // grad_hidden[n] = sum_k grad[n, k] weight[cand_ids[n, k]]
    at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(H);
      for (int64_t n = begin; n < end; ++n) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t k = 0; k < K; ++k) {
          const acc_t gk = g_ptr[n * K + k];
          const scalar_t* w = w_ptr + id_ptr[n * K + k] * H;
          for (int64_t j = 0; j < H; ++j) acc[j] += gk * static_cast<acc_t>(w[j]);
        }
        for (int64_t j = 0; j < H; ++j) gh_ptr[n * H + j] = static_cast<scalar_t>(acc[j]);
      }
    });
    // grad_weight[v] += grad[n, k] hidden[n] for every (n, k) with cand_ids[n, k] = v: each thread
    // scans all ids and keeps those in its own vocabulary range [v0, v1).
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t chunk = (V + threads - 1) / threads;
    at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t v0 = t * chunk, v1 = std::min(V, v0 + chunk);
        for (int64_t i = 0; i < N * K; ++i) {
          const int64_t v = id_ptr[i];
          if (v < v0 || v >= v1) continue;
          const acc_t gk = g_ptr[i];
          const scalar_t* h = h_ptr + (i / K) * H;
          acc_t* gw = gw_ptr + v * H;
          for (int64_t j = 0; j < H; ++j) gw[j] += gk * static_cast<acc_t>(h[j]);
          if (gb_ptr != nullptr) gb_ptr[v] += gk;
        }
      }
    });
    grad_weight = gw_acc.to(weight.scalar_type());
    grad_bias = has_bias ? gb_acc.to(grad_in.scalar_type()) : at::empty({0}, weight.options());
  });
  return {grad_hidden, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(flexrec_C, CPU, m) {
  m.impl("candidate_logits", &candidate_logits_cpu);
  m.impl("candidate_logits_backward", &candidate_logits_backward_cpu);
}

}  // namespace flexrec
