"""The ranking policy: any causal LM that names candidates with slot tokens (FLEXREC.md section 1).

After the prompt the model emits exactly K slot tokens. Each decoding step is one fused op,
``decode_step``: the candidate-restricted head (``candidate_logits``: the final hidden state against
the K slot-token rows of the output embedding, never the V-wide vocabulary), the mask of the
candidates already emitted, and the pick (``pool_sample``). Training recomputes the same masked
softmax with ``candidate_logits`` and ``permutation_logprob`` on a teacher-forced pass, so rollout and
training log-probs agree.

Prompts are left-padded here (whatever padding the batch came with), so that every row's prompt
ends at the same column and the K decision positions are the same K columns for every row.
"""

from __future__ import annotations

import functools
import inspect
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from flexrec.ops import candidate_logits, check_decode_inputs, check_finite, decode_step, permutation_logprob


class Rollout(NamedTuple):
    """G ranked lists per prompt.

    Shapes: perm (B, G, K) int64, candidate indices (slot numbers) in ranked order;
            logprob (B, G, K) float32, the log-prob of each step's choice under the sampling policy.
    """

    perm: Tensor
    logprob: Tensor


def left_pad(input_ids: Tensor, attention_mask: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Moves every row's real tokens to the right end. Shapes: (B, T), (B, T) -> (B, T), (B, T)."""
    mask = attention_mask.bool()
    if torch.equal(mask, mask.cummax(1).values):
        return input_ids, attention_mask.long()  # already left-padded (or no padding)
    # A stable sort on "is real" puts padding first and keeps the real tokens' order.
    order = torch.sort(mask.long(), dim=1, stable=True).indices
    ids = torch.gather(input_ids, 1, order)
    new_mask = torch.gather(mask.long(), 1, order)
    return ids.masked_fill(new_mask == 0, pad_id), new_mask


@functools.lru_cache(maxsize=None)
def _cache_kwarg_of(forward_type: type, forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _cache_kwarg(backbone: nn.Module) -> str:
    # transformers 5 renamed past_key_values to cache; older versions only know the old name.
    # (inspect.signature costs ~0.15 ms: once per backbone class, not once per decoding step.)
    return _cache_kwarg_of(type(backbone), type(backbone).forward)


def _cache_of(out) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _positions(attention_mask: Tensor) -> Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class RankingPolicy(nn.Module):
    """Wraps a Hugging Face causal LM (optionally a peft model) as a permutation policy.

    Args:
        model: a ``PreTrainedModel`` with a causal-LM head (or a peft wrapper of one).
        slot_token_ids: the token ids of ``<c0> .. <c{K_max-1}>``; candidate i is slot i.
        pad_token_id: used to left-pad prompts.
    """

    def __init__(self, model: nn.Module, slot_token_ids: list[int], pad_token_id: int):
        super().__init__()
        self.model = model
        self.register_buffer("slot_ids", torch.tensor(slot_token_ids, dtype=torch.long), persistent=False)
        self.pad_token_id = int(pad_token_id)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, method: str, *args, **kwargs):
        """``policy("logprobs", ...)`` or ``policy("rank", ...)``: the call that DDP and FSDP wrap.

        Their hooks run on ``forward`` only (DDP's gradient all-reduce, FSDP's parameter
        all-gather), so a wrapped policy is called this way (``flexrec.train.data_parallel``).
        """
        if method not in ("logprobs", "rank"):
            raise ValueError(f"RankingPolicy({method!r}, ...): expected 'logprobs' or 'rank'")
        return getattr(self, method)(*args, **kwargs)

    def decoder_layers(self) -> nn.ModuleList:
        """The transformer blocks (what FSDP shards one by one)."""
        layers = getattr(self._backbone(), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(
                f"{type(self._backbone()).__name__} has no .layers list of decoder blocks; FSDP sharding "
                "supports Llama/Qwen2/SmolLM2-style models, use --dist-strategy ddp for this one"
            )
        return layers

    # The pieces of the LM we use: the backbone (hidden states, no vocabulary head) and the output
    # embedding's rows for the slot tokens.
    def _base(self) -> nn.Module:
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def _backbone(self) -> nn.Module:
        return self._base().get_decoder()

    def _head(self) -> tuple[Tensor, Optional[Tensor]]:
        head = self._base().get_output_embeddings()
        return head.weight, getattr(head, "bias", None)

    def _slot_logits(self, hidden: Tensor, num_candidates: int) -> Tensor:
        """Shapes: hidden (N, H) -> (N, K) float32."""
        weight, bias = self._head()
        ids = self.slot_ids[:num_candidates].expand(hidden.shape[0], num_candidates)
        return candidate_logits(hidden, weight, ids, bias).float()

    @torch.no_grad()
    def rank(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        num_candidates: int,
        samples: int = 1,
        greedy: bool = False,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
        noise_rows: Optional[tuple[int, int]] = None,
    ) -> Rollout:
        """Batched constrained decoding with the KV cache: ``samples`` permutations per prompt.

        Greedy takes the argmax of the masked step distribution; otherwise Gumbel-max sampling
        draws from softmax(logits / temperature) over the remaining pool. ``noise_rows`` =
        (offset, total): each step draws the noise of ``total`` rows and uses rows offset ..
        offset + B*G, so that a rank holding a slice of a global batch samples what one process
        with the whole batch would (``flexrec.train.distributed.noise_rows``); None draws B*G rows.

        Shapes: input_ids (B, T), attention_mask (B, T) -> Rollout with perm, logprob (B, G, K).
        """
        K, G = num_candidates, samples
        ids, mask = left_pad(input_ids, attention_mask, self.pad_token_id)
        B = ids.shape[0]
        backbone = self._backbone()
        out = backbone(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True)
        cache = _cache_of(out)
        hidden = out.last_hidden_state[:, -1]  # (B, H)
        if G > 1:  # one prompt pass, G continuations: repeat the cache instead of the prompt
            cache.batch_repeat_interleave(G)
            hidden = hidden.repeat_interleave(G, 0)
            mask = mask.repeat_interleave(G, 0)
        N = B * G
        offset, rows = noise_rows if noise_rows is not None else (0, N)
        if offset < 0 or offset + N > rows:
            raise ValueError(f"noise_rows {noise_rows}: rows {offset}..{offset + N} of {rows} do not exist")
        # Everything the K steps share is built once, and the loop makes no host sync: the head's
        # inputs are checked here, once, and each step calls decode_step with check=False.
        weight, bias = self._head()
        cand_ids = self.slot_ids[:K].expand(N, K).contiguous()
        weight, bias = weight.contiguous(), None if bias is None else bias.contiguous()
        gumbel_all = None
        if not greedy:
            # All K steps' noise in one draw: on a CPU generator the same numbers as K draws of
            # (rows, K), and on a GPU one host-to-device copy instead of K.
            u = torch.rand(K, rows, K, generator=generator, device="cpu" if generator is None else generator.device)
            u = u[:, offset : offset + N] if rows != N else u
            gumbel_all = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7))).to(ids.device)
        temperature = float(temperature)
        check_decode_inputs(hidden, weight, cand_ids, None, None if gumbel_all is None else gumbel_all[0],
                            temperature, bias)
        used = torch.zeros(N, K, dtype=torch.bool, device=ids.device)
        T0 = mask.shape[1]
        full_mask = torch.cat([mask, mask.new_ones(N, K - 1)], 1)  # the mask of every step, sliced per step
        next_pos = mask.sum(-1, keepdim=True)  # (N, 1)
        perm = torch.empty(N, K, dtype=torch.long, device=ids.device)
        logprob = torch.empty(N, K, dtype=torch.float32, device=ids.device)
        cache_kwarg = _cache_kwarg(backbone)
        for t in range(K):
            gumbel = None if gumbel_all is None else gumbel_all[t]
            # The fused step: candidate_logits then pool_sample in one kernel, no (N, K) logits.
            index, lp, used = decode_step(hidden, weight, cand_ids, used, gumbel, temperature, bias, check=False)
            perm[:, t], logprob[:, t] = index, lp.float()
            if t == K - 1:
                break  # the last choice needs no forward pass
            out = backbone(
                input_ids=self.slot_ids[index][:, None],
                attention_mask=full_mask[:, : T0 + t + 1],
                position_ids=next_pos,
                use_cache=True,
                **{cache_kwarg: cache},
            )
            cache, hidden, next_pos = _cache_of(out), out.last_hidden_state[:, -1], next_pos + 1
        check_finite("rollout log-probs", logprob, "a NaN or -inf comes from the model's hidden states")  # one sync
        return Rollout(perm.view(B, G, K), logprob.view(B, G, K))

    def step_logits(self, input_ids: Tensor, attention_mask: Tensor, perm: Tensor) -> Tensor:
        """Teacher-forced candidate logits at the K decision positions of G lists per prompt.

        Each list's sequence is prompt + slot tokens of perm[:K-1]; the hidden state before each
        slot token (the prompt's last token for step 0) scores the K candidates. The prompt is run
        once and its KV cache repeated for the G lists, exactly as ``rank`` does (G times less
        prompt compute); with gradient checkpointing, which cannot keep a cache, the prompt is
        repeated instead.

        Shapes: input_ids (B, T), attention_mask (B, T), perm (B, G, K) -> (B, G, K, K) float32.
        """
        B, G, K = perm.shape
        N = B * G
        ids, mask = left_pad(input_ids, attention_mask, self.pad_token_id)
        backbone = self._backbone()
        flat = perm.reshape(N, K)
        cont = self.slot_ids[flat[:, : K - 1]]  # (N, K-1)
        if getattr(backbone, "gradient_checkpointing", False) and self.training:
            ids, mask = ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
            full_mask = torch.cat([mask, mask.new_ones(N, K - 1)], 1)
            out = backbone(
                input_ids=torch.cat([ids, cont], 1), attention_mask=full_mask, position_ids=_positions(full_mask)
            )
            hidden = out.last_hidden_state[:, ids.shape[1] - 1 :]  # (N, K, H)
        else:
            out = backbone(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), use_cache=True)
            cache, first = _cache_of(out), out.last_hidden_state[:, -1:]  # (B, 1, H)
            if G > 1:
                cache.batch_repeat_interleave(G)
                mask, first = mask.repeat_interleave(G, 0), first.repeat_interleave(G, 0)
            hidden = first
            if K > 1:
                start = mask.sum(-1, keepdim=True)
                out = backbone(
                    input_ids=cont,
                    attention_mask=torch.cat([mask, mask.new_ones(N, K - 1)], 1),
                    position_ids=start + torch.arange(K - 1, device=start.device)[None],
                    use_cache=True,
                    **{_cache_kwarg(backbone): cache},
                )
                hidden = torch.cat([first, out.last_hidden_state], 1)  # (N, K, H)
        return self._slot_logits(hidden.reshape(N * K, -1), K).view(B, G, K, K)

    def logprobs(
        self, input_ids: Tensor, attention_mask: Tensor, perm: Tensor, temperature: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Step log-probs and entropies of given permutations (Plackett-Luce, remaining-pool mask).

        Shapes: input_ids (B, T), attention_mask (B, T), perm (B, G, K)
                -> logprob (B, G, K), entropy (B, G, K).
        """
        B, G, K = perm.shape
        logits = self.step_logits(input_ids, attention_mask, perm).reshape(B * G, K, K)
        logprob, entropy = permutation_logprob(logits, perm.reshape(B * G, K), temperature)
        return logprob.view(B, G, K), entropy.view(B, G, K)
