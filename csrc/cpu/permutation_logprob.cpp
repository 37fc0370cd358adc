// CPU kernels of flexrec_C::permutation_logprob and its backward: the Plackett-Luce log-prob and
// entropy of every step of a given permutation, parallel over rows. Step t's softmax runs over the
// candidates not in perm[:t], kept compact in ascending order (step t touches K - t logits), with
// common.h's compact_softmax (float with a vectorisable exp; double for double logits): the same
// arithmetic pool_sample uses while sampling.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "common.h"

namespace flexrec {

namespace {

void check_logits_perm(const at::Tensor& logits, const at::Tensor& perm, double temperature) {
  TORCH_CHECK(logits.dim() == 3 && logits.size(1) == logits.size(2),
              "logits must be (B, K, K) (step t's logits over the K candidates), got ",
              logits.sizes());
  TORCH_CHECK(logits.size(2) >= 1, "logits has K = 0 candidates; a pool needs K >= 1");
  TORCH_CHECK(at::isFloatingType(logits.scalar_type()), "logits must be a floating tensor, got ",
              logits.scalar_type());
  TORCH_CHECK(perm.dim() == 2 && perm.size(0) == logits.size(0) && perm.size(1) == logits.size(1),
              "perm must be (B, K) = (", logits.size(0), ", ", logits.size(1), "), got ",
              perm.sizes());
  TORCH_CHECK(perm.scalar_type() == at::kLong, "perm must be int64, got ", perm.scalar_type(),
              "; convert it with perm.long()");
  TORCH_CHECK(temperature > 0, "temperature must be > 0, got ", temperature);
  TORCH_CHECK(logits.device().is_cpu() && perm.device().is_cpu(),
              "permutation_logprob (C++ CPU kernel) needs CPU tensors, got logits on ",
              logits.device(), " and perm on ", perm.device());
}

// True when perm's row is a permutation of 0..K-1 (seen: K scratch bytes).
inline bool is_permutation(const int64_t* perm, int64_t K, uint8_t* seen) {
  std::fill(seen, seen + K, uint8_t(0));
  for (int64_t t = 0; t < K; ++t) {
    const int64_t c = perm[t];
    if (c < 0 || c >= K || seen[c]) return false;
    seen[c] = 1;
  }
  return true;
}

// Scratch of one row's walk, allocated once per thread.
template <typename acc_t>
struct RowScratch {
  explicit RowScratch(int64_t K) : y(K), e(K), rem(K), seen(K) {}
  std::vector<acc_t> y, e;     // remaining candidates' logits / T, and exp(y - max)
  std::vector<int32_t> rem;    // the remaining candidates, ascending
  std::vector<uint8_t> seen;
};

// Walks the K steps of one row (shared by the forward and the backward). At step t, with
// n = K - t candidates left in s.rem[0..n), s.y and s.e hold their scaled logits and
// exp(y - max), `st` the softmax statistics and `at` the chosen candidate's place in s.rem;
// step(t, n, st, at) runs before that candidate is removed. Returns false, doing nothing, when
// the row is not a permutation.
template <typename acc_t, typename scalar_t, typename StepFn>
bool walk_permutation(const scalar_t* logits_row, const int64_t* prow, int64_t K, acc_t T,
                      RowScratch<acc_t>& s, StepFn step) {
  if (!is_permutation(prow, K, s.seen.data())) return false;
  for (int64_t c = 0; c < K; ++c) s.rem[c] = static_cast<int32_t>(c);
  for (int64_t t = 0; t < K; ++t) {
    const scalar_t* lrow = logits_row + t * K;
    const int64_t n = K - t;
    for (int64_t i = 0; i < n; ++i) s.y[i] = static_cast<acc_t>(lrow[s.rem[i]]) / T;
    const SoftmaxStats<acc_t> st = compact_softmax(s.y.data(), n, s.e.data());
    int64_t at = 0;
    while (s.rem[at] != prow[t]) ++at;
    step(t, n, st, at);
    for (int64_t j = at; j + 1 < n; ++j) s.rem[j] = s.rem[j + 1];
  }
  return true;
}

#define FLEXREC_CHECK_PERM(bad)                                                                 \
  TORCH_CHECK(bad.load() < 0, "perm row ", bad.load(),                                         \
              " is not a permutation of 0..K-1 (an index out of range or repeated); each row "  \
              "must list every candidate exactly once")

std::tuple<at::Tensor, at::Tensor> permutation_logprob_cpu(const at::Tensor& logits_in,
                                                           const at::Tensor& perm_in,
                                                           double temperature) {
  check_logits_perm(logits_in, perm_in, temperature);
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor perm = perm_in.contiguous();
  const int64_t B = logits.size(0), K = logits.size(2);
  const bool half = logits.scalar_type() == at::kHalf || logits.scalar_type() == at::kBFloat16;
  const auto out_dtype = half ? at::kFloat : logits.scalar_type();
  at::Tensor logprob = at::empty({B, K}, logits.options().dtype(out_dtype));
  at::Tensor entropy = at::empty({B, K}, logits.options().dtype(out_dtype));
  std::atomic<int64_t> bad{-1};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "permutation_logprob_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const scalar_t* l_ptr = logits.const_data_ptr<scalar_t>();
    const int64_t* p_ptr = perm.const_data_ptr<int64_t>();
    acc_t* lp_ptr = logprob.mutable_data_ptr<acc_t>();
    acc_t* en_ptr = entropy.mutable_data_ptr<acc_t>();
    const acc_t T = static_cast<acc_t>(temperature);
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      RowScratch<acc_t> s(K);
      for (int64_t b = begin; b < end; ++b) {
        const bool ok = walk_permutation(l_ptr + b * K * K, p_ptr + b * K, K, T, s,
                                         [&](int64_t t, int64_t, const SoftmaxStats<acc_t>& st, int64_t at) {
          lp_ptr[b * K + t] = s.y[at] - st.mx - st.logz;
          en_ptr[b * K + t] = st.entropy;
        });
        if (!ok) bad.store(b);
      }
    });
  });
  FLEXREC_CHECK_PERM(bad);
  return {logprob, entropy};
}

// d logp_c / d x_j = 1[j = c] - p_j and d H / d x_j = -p_j (log p_j + H) on allowed j, 0 on
// masked j; x = logits / T, so the result is divided by T.
at::Tensor permutation_logprob_backward_cpu(const at::Tensor& grad_logprob_in,
                                            const at::Tensor& grad_entropy_in,
                                            const at::Tensor& logits_in, const at::Tensor& perm_in,
                                            double temperature) {
  check_logits_perm(logits_in, perm_in, temperature);
  const int64_t B = logits_in.size(0), K = logits_in.size(2);
  TORCH_CHECK(grad_logprob_in.dim() == 2 && grad_logprob_in.size(0) == B && grad_logprob_in.size(1) == K &&
                  grad_entropy_in.sizes() == grad_logprob_in.sizes(),
              "grad_logprob and grad_entropy must be (B, K) = (", B, ", ", K, "), got ",
              grad_logprob_in.sizes(), " and ", grad_entropy_in.sizes());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor perm = perm_in.contiguous();
  at::Tensor grad = at::empty_like(logits);
  std::atomic<int64_t> bad{-1};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "permutation_logprob_backward_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    const at::Tensor gl = grad_logprob_in.to(acc_dtype).contiguous();
    const at::Tensor ge = grad_entropy_in.to(acc_dtype).contiguous();
    const acc_t* gl_ptr = gl.const_data_ptr<acc_t>();
    const acc_t* ge_ptr = ge.const_data_ptr<acc_t>();
    const scalar_t* l_ptr = logits.const_data_ptr<scalar_t>();
    const int64_t* p_ptr = perm.const_data_ptr<int64_t>();
    scalar_t* g_ptr = grad.mutable_data_ptr<scalar_t>();
    const acc_t T = static_cast<acc_t>(temperature);
    const acc_t invT = acc_t(1) / T;
    at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
      RowScratch<acc_t> s(K);
      for (int64_t b = begin; b < end; ++b) {
        const bool ok = walk_permutation(l_ptr + b * K * K, p_ptr + b * K, K, T, s,
                                         [&](int64_t t, int64_t n, const SoftmaxStats<acc_t>& st, int64_t at) {
          scalar_t* grow = g_ptr + (b * K + t) * K;
          const acc_t glt = gl_ptr[b * K + t], get = ge_ptr[b * K + t];
          const acc_t invz = acc_t(1) / st.z;
          const acc_t shift = st.mx + st.logz - st.entropy;  // log p_j + H = y_j - shift
          // Masked candidates (chosen before step t) get zero gradient.
          for (int64_t c = 0; c < K; ++c) grow[c] = scalar_t(0);
          for (int64_t i = 0; i < n; ++i) {
            const acc_t p = s.e[i] * invz;
            const acc_t gx = -glt * p - get * p * (s.y[i] - shift);
            grow[s.rem[i]] = static_cast<scalar_t>(gx * invT);
          }
          // The chosen one's term, written over the loop's (a branch-free inner loop), in the
          // first version's order of operations, so that trained runs reproduce bit for bit.
          grow[s.rem[at]] = static_cast<scalar_t>((glt * (acc_t(1) - s.e[at] * invz) -
                                                   get * s.e[at] * invz * (s.y[at] - shift)) * invT);
        });
        if (!ok) bad.store(b);
      }
    });
  });
  FLEXREC_CHECK_PERM(bad);
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(flexrec_C, CPU, m) {
  m.impl("permutation_logprob", &permutation_logprob_cpu);
  m.impl("permutation_logprob_backward", &permutation_logprob_backward_cpu);
}

}  // namespace flexrec
