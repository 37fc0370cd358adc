// CPU kernel of flexrec_C::decode_step: candidate_logits followed by pool_sample, parallel over
// rows, never building the (B, V) logits. Per row: the dot products of the unused candidates
// (common.h's dot_product, bias added before rounding to the input dtype, as candidate_logits
// does), then 1/T, Gumbel-max argmax (lowest index on ties) and common.h's compact_softmax over
// the unused candidates, as pool_sample does: the same index and log-prob, to the bit.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <limits>
#include <vector>

#include "common.h"

namespace flexrec {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_step_cpu(
    const at::Tensor& hidden_in, const at::Tensor& weight_in, const at::Tensor& ids_in,
    const at::Tensor& used_in, const c10::optional<at::Tensor>& gumbel_in, double temperature,
    const c10::optional<at::Tensor>& bias_in) {
  TORCH_CHECK(hidden_in.dim() == 2, "decode_step: hidden must be (B, H), got ", hidden_in.dim(), "-D");
  TORCH_CHECK(weight_in.dim() == 2 && weight_in.size(1) == hidden_in.size(1),
              "decode_step: weight must be (V, H) with H = ", hidden_in.size(1), ", got ", weight_in.sizes());
  TORCH_CHECK(ids_in.dim() == 2 && ids_in.size(0) == hidden_in.size(0),
              "decode_step: cand_ids must be (B, K) with B = ", hidden_in.size(0), ", got ", ids_in.sizes());
  TORCH_CHECK(ids_in.size(1) >= 1, "decode_step: K = 0 candidates; a pool needs K >= 1");
  TORCH_CHECK(ids_in.scalar_type() == at::kLong, "decode_step: cand_ids must be int64, got ",
              ids_in.scalar_type(), "; use .long()");
  TORCH_CHECK(used_in.sizes() == ids_in.sizes() && used_in.scalar_type() == at::kBool,
              "decode_step: used must be a bool tensor shaped like cand_ids ", ids_in.sizes(), ", got ",
              used_in.scalar_type(), " ", used_in.sizes());
  TORCH_CHECK(at::isFloatingType(hidden_in.scalar_type()), "decode_step: hidden must be floating, got ",
              hidden_in.scalar_type());
  TORCH_CHECK(weight_in.scalar_type() == hidden_in.scalar_type(), "decode_step: weight is ",
              weight_in.scalar_type(), " but hidden is ", hidden_in.scalar_type(), "; cast one of them");
  TORCH_CHECK(temperature > 0, "decode_step: temperature must be > 0, got ", temperature);
  TORCH_CHECK(hidden_in.device().is_cpu() && weight_in.device().is_cpu() && ids_in.device().is_cpu() &&
                  used_in.device().is_cpu(),
              "decode_step (C++ CPU kernel) needs CPU tensors; move them with .cpu()");
  const at::Tensor hidden = hidden_in.contiguous(), weight = weight_in.contiguous();
  const at::Tensor ids = ids_in.contiguous(), used = used_in.contiguous();
  const int64_t B = hidden.size(0), H = hidden.size(1), K = ids.size(1), V = weight.size(0);
  const bool half = hidden.scalar_type() == at::kHalf || hidden.scalar_type() == at::kBFloat16;
  const auto acc_type = half ? at::kFloat : hidden.scalar_type();
  at::Tensor gumbel, bias;
  if (gumbel_in.has_value() && gumbel_in->defined()) {
    TORCH_CHECK(gumbel_in->sizes() == ids.sizes(), "decode_step: gumbel has shape ", gumbel_in->sizes(),
                " but cand_ids has ", ids.sizes(), "; draw one Gumbel(0, 1) noise per candidate");
    TORCH_CHECK(gumbel_in->device().is_cpu(), "decode_step: gumbel must be on the CPU, got ",
                gumbel_in->device());
    gumbel = gumbel_in->to(acc_type).contiguous();
  }
  if (bias_in.has_value() && bias_in->defined()) {
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == V, "decode_step: bias must be (V,) with V = ",
                V, ", got ", bias_in->sizes());
    TORCH_CHECK(bias_in->device().is_cpu(), "decode_step: bias must be on the CPU, got ", bias_in->device());
    bias = bias_in->to(hidden.scalar_type()).contiguous();
  }
  at::Tensor index = at::empty({B}, hidden.options().dtype(at::kLong));
  at::Tensor logprob = at::empty({B}, hidden.options().dtype(acc_type));
  at::Tensor used_out = used.clone();
  std::atomic<int64_t> bad_id_row{-1};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, hidden.scalar_type(), "decode_step_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* h_ptr = hidden.const_data_ptr<scalar_t>();
    const scalar_t* w_ptr = weight.const_data_ptr<scalar_t>();
    const scalar_t* b_ptr = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
    const int64_t* id_ptr = ids.const_data_ptr<int64_t>();
    const bool* u_ptr = used.const_data_ptr<bool>();
    const acc_t* g_ptr = gumbel.defined() ? gumbel.const_data_ptr<acc_t>() : nullptr;
    int64_t* i_ptr = index.mutable_data_ptr<int64_t>();
    acc_t* lp_ptr = logprob.mutable_data_ptr<acc_t>();
    bool* uo_ptr = used_out.mutable_data_ptr<bool>();
    const acc_t T = static_cast<acc_t>(temperature);
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> h(H), y(K), e(K);
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t j = 0; j < H; ++j) h[j] = static_cast<acc_t>(h_ptr[b * H + j]);
        const bool* u = u_ptr + b * K;
        int64_t best = -1, best_i = 0, n = 0;
        acc_t best_score = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t id = id_ptr[b * K + k];
          if (id < 0 || id >= V) {
            bad_id_row.store(b);
            continue;
          }
          if (u[k]) continue;  // masked: no dot product
          acc_t dot = dot_product(h.data(), w_ptr + id * H, H);
          if (b_ptr != nullptr) dot += static_cast<acc_t>(b_ptr[id]);
          const acc_t yk = static_cast<acc_t>(static_cast<scalar_t>(dot)) / T;
          const acc_t score = g_ptr ? yk + g_ptr[b * K + k] : yk;
          if (best < 0 || score > best_score) {  // strict: ties go to the lowest index
            best = k;
            best_i = n;
            best_score = score;
          }
          y[n++] = yk;
        }
        if (best < 0) {  // every candidate used: the Python wrapper reports it before calling
          i_ptr[b] = 0;
          lp_ptr[b] = std::numeric_limits<acc_t>::quiet_NaN();
          continue;
        }
        const SoftmaxStats<acc_t> st = compact_softmax(y.data(), n, e.data());
        i_ptr[b] = best;
        lp_ptr[b] = pick_logprob(y[best_i], st);  // -inf when every allowed score is -inf
        uo_ptr[b * K + best] = true;
      }
    });
  });
  TORCH_CHECK(bad_id_row.load() < 0, "decode_step: cand_ids row ", bad_id_row.load(),
              " has an id outside [0, V = ", V, "); check the slot-token ids");
  return {index, logprob, used_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(flexrec_C, CPU, m) { m.impl("decode_step", &decode_step_cpu); }

}  // namespace flexrec
