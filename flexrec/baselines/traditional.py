"""Traditional recommenders that rank the same candidate pools as the LLM policy (FLEXREC.md section 7).

Every baseline is fitted on the same OBSERVED interactions (`training_interactions`) and answers the
same two calls as a trained policy does in `flexrec.eval`:

    model = make_baseline("bpr", data, train_users, seed=0)
    scores = model.score(examples)   # (B, K) float32, higher = ranked earlier
    perm = model.rank(examples)      # (B, K) int64 candidate indices, best first

What "observed" means (ours, the same for every baseline):
- every user's history (items, feedback), because a policy sees it too: it is in every prompt.
  Histories end before any candidate, so they never contain a pool item (no leakage);
- the sparse observed feedback (`data.observed`) of the TRAINING users only: an LLM policy is trained
  on it, and a test user's observed feedback is on the very items their pools hold.
True labels are never read here; `flexrec.eval` scores against them.

The baselines are need-agnostic, as in the paper: they rank by predicted interest whatever the need
says, so their explore/trend scores show what a single interest model gives on those needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from flexrec.data import InteractionData, RankingExample
from flexrec.data.pools import pool_rng

POSITIVE = 0.625  # normalised feedback >= 3.5/5 counts as a positive for the implicit models


@dataclass
class Interactions:
    """The observed (user, item, feedback) triples every baseline trains on.

    Shapes: users, items, feedback: (N,), feedback normalised to [0, 1]; days: (N,), -1 for observed
    feedback outside histories (it has no time). `from_history` says which rows come from histories.
    """

    users: np.ndarray
    items: np.ndarray
    feedback: np.ndarray
    from_history: np.ndarray


def training_interactions(data: InteractionData, train_users: np.ndarray) -> Interactions:
    """All users' histories plus the training users' observed feedback (see the module docstring)."""
    h_users = np.repeat(np.arange(data.n_users), np.diff(data.history_ptr))
    h_fb = data.normalized_interest(data.history_feedback)
    o_users, o_items, o_fb = [], [], []
    for u in np.asarray(train_users, np.int64):
        items = data.observed.user_items(int(u))
        values, _ = data.observed.lookup(int(u), items)
        o_users.append(np.full(len(items), u))
        o_items.append(items)
        o_fb.append(data.normalized_interest(values))
    cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
    return Interactions(
        users=np.concatenate([h_users, cat(o_users, np.int64)]).astype(np.int64),
        items=np.concatenate([data.history_items, cat(o_items, np.int64)]).astype(np.int64),
        feedback=np.concatenate([h_fb, cat(o_fb, np.float32)]).astype(np.float32),
        from_history=np.concatenate([np.ones(len(h_users), bool), np.zeros(sum(map(len, o_users)), bool)]),
    )


class Recommender:
    """A need-agnostic scorer of candidate pools. Subclasses implement `fit` and `score_pool`."""

    name = "base"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, data: InteractionData, train_users: np.ndarray) -> "Recommender":
        self.data = data
        return self

    def score_pool(self, example: RankingExample) -> np.ndarray:
        """Scores of one pool's candidates. Shapes: (K,) float."""
        raise NotImplementedError

    def score(self, examples: list[RankingExample]) -> torch.Tensor:
        """Shapes: B examples of K candidates -> (B, K) float32, higher = better."""
        return torch.from_numpy(np.stack([np.asarray(self.score_pool(e), np.float32) for e in examples]))

    def rank(self, examples: list[RankingExample]) -> torch.Tensor:
        """Candidate indices best first; ties broken by a seeded random order, never by slot number.

        Shapes: -> (B, K) int64.
        """
        scores = self.score(examples).double()
        jitter = torch.from_numpy(np.stack([pool_rng(self.seed + 17, e.user, e.need).random(e.K) for e in examples]))
        # Lexicographic: score first, the jitter only among exact ties.
        order = torch.argsort(jitter, dim=-1, descending=True)
        return order.gather(-1, torch.argsort(scores.gather(-1, order), dim=-1, descending=True, stable=True))


class RandomRanker(Recommender):
    """A uniformly random order per (user, need), seeded: the floor every model should beat."""

    name = "random"

    def score_pool(self, example: RankingExample) -> np.ndarray:
        return pool_rng(self.seed + 1, example.user, example.need).random(example.K)


class PopularityRanker(Recommender):
    """Items by their plays before the user's cutoff day (``InteractionData.popularity_before``), most
    played first: what a popularity list could know when the user's pool is ranked, nothing from later."""

    name = "popularity"

    def score_pool(self, example):
        return self.data.popularity_before(example.user)[example.items]


class ItemKNN(Recommender):
    """Item-based CF: score(c) = sum over history items h of sim(c, h) * feedback(h).

    sim is the cosine of two items' columns in the binary user-item matrix of the observed data, with a
    shrinkage term (`shrink`) that damps similarities resting on few co-users, and only the
    `neighbours` most similar items of each item kept (the usual item-KNN sparsification).
    """

    name = "item-knn"

    def __init__(self, seed: int = 0, neighbours: int = 50, shrink: float = 10.0):
        super().__init__(seed)
        self.neighbours, self.shrink = neighbours, shrink

    def fit(self, data, train_users):
        super().fit(data, train_users)
        inter = training_interactions(data, train_users)
        R = np.zeros((data.n_users, data.n_items), np.float32)
        R[inter.users, inter.items] = 1.0
        co = R.T @ R
        norms = np.sqrt(np.diag(co))
        sim = co / (np.outer(norms, norms) + self.shrink)
        np.fill_diagonal(sim, 0.0)
        if self.neighbours < data.n_items:
            cut = -np.partition(-sim, self.neighbours - 1, axis=1)[:, self.neighbours - 1: self.neighbours]
            sim = np.where(sim >= cut, sim, 0.0)
        self.sim = sim.astype(np.float32)
        return self

    def score_pool(self, example):
        if len(example.history_items) == 0:
            return np.zeros(example.K, np.float32)
        weights = self.data.normalized_interest(example.history_feedback)
        return self.sim[np.ix_(example.items, example.history_items)] @ weights


class BPRMF(Recommender):
    """Matrix factorisation trained with the BPR pairwise loss (Rendle et al. 2009), in torch.

    Positives are history items and training users' observed feedback >= 3.5/5; each epoch samples
    one uniform negative per positive among the items the user has not interacted with.
    """

    name = "bpr"

    def __init__(self, seed: int = 0, dim: int = 32, epochs: int = 60, lr: float = 0.02, l2: float = 1e-4,
                 batch_size: int = 2048):
        super().__init__(seed)
        self.dim, self.epochs, self.lr, self.l2, self.batch_size = dim, epochs, lr, l2, batch_size

    def fit(self, data, train_users):
        super().fit(data, train_users)
        inter = training_interactions(data, train_users)
        keep = inter.from_history | (inter.feedback >= POSITIVE)
        users, items = torch.from_numpy(inter.users[keep]), torch.from_numpy(inter.items[keep])
        seen = torch.zeros(data.n_users, data.n_items, dtype=torch.bool)
        seen[torch.from_numpy(inter.users), torch.from_numpy(inter.items)] = True
        gen = torch.Generator().manual_seed(self.seed)
        self.U = nn.Embedding(data.n_users, self.dim)
        self.V = nn.Embedding(data.n_items, self.dim)
        self.b = nn.Embedding(data.n_items, 1)
        for emb, std in ((self.U, 0.1), (self.V, 0.1), (self.b, 0.0)):
            with torch.no_grad():
                emb.weight.normal_(0.0, std, generator=gen) if std else emb.weight.zero_()
        params = [self.U.weight, self.V.weight, self.b.weight]
        # At most ~10 steps per epoch: ML-100K's 90k positives in 2048-batches took 1 s an epoch on
        # a 2-core CPU; a tiny world still gets a few steps an epoch.
        batch_size = max(self.batch_size, -(-len(users) // 10))
        opt = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.epochs):
            neg = torch.randint(0, data.n_items, (len(users),), generator=gen)
            for _ in range(3):  # resample negatives that hit a seen item (a few rounds is plenty)
                bad = seen[users, neg]
                neg[bad] = torch.randint(0, data.n_items, (int(bad.sum()),), generator=gen)
            order = torch.randperm(len(users), generator=gen)
            for start in range(0, len(users), batch_size):
                idx = order[start:start + batch_size]
                u, i, j = users[idx], items[idx], neg[idx]
                x = (self.U(u) * (self.V(i) - self.V(j))).sum(-1) + (self.b(i) - self.b(j)).squeeze(-1)
                reg = self.U(u).pow(2).sum(-1) + self.V(i).pow(2).sum(-1) + self.V(j).pow(2).sum(-1)
                loss = -nn.functional.logsigmoid(x).mean() + self.l2 * reg.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return self

    @torch.no_grad()
    def score_pool(self, example):
        items = torch.from_numpy(np.asarray(example.items, np.int64))
        s = self.V(items) @ self.U.weight[example.user] + self.b(items).squeeze(-1)
        return s.numpy()


class _SASRecNet(nn.Module):
    """Causal self-attention over the item sequence; the output at t predicts the item at t + 1."""

    def __init__(self, n_items: int, dim: int, layers: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)  # 0 = padding, item i -> i + 1
        self.pos = nn.Embedding(max_len, dim)
        block = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        # Small embeddings: with the default N(0, 1) and tied output, the first logits have a std of
        # sqrt(dim) and training never recovers (measured: loss above log(n_items) after 40 epochs).
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.normal_(self.pos.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Shapes: seq (B, T) long, left-padded with 0 -> (B, T, dim)."""
        T = seq.shape[1]
        x = self.drop(self.item(seq) + self.pos.weight[:T])
        causal = torch.triu(torch.full((T, T), float("-inf")), diagonal=1)
        # No key-padding mask: with left padding the first rows would attend to nothing (NaN, which
        # then leaks through 0 * NaN). Padding is a zero embedding plus its position, a harmless prefix.
        return self.norm(self.blocks(x, mask=causal, is_causal=True))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item (tied embeddings). Shapes: (..., dim) -> (..., n_items)."""
        return hidden @ self.item.weight[1:].T


class SASRec(Recommender):
    """A small SASRec-style sequential model (Kang & McAuley 2018) over the users' histories.

    Trained with full-softmax next-item cross-entropy (the catalogues here have a few hundred to a few
    thousand items, so the full softmax is cheap and beats sampled negatives). Only history sequences
    are used: observed feedback outside histories has no time order. Candidates are scored by the
    last position's output against their item embeddings.
    """

    name = "sasrec"

    def __init__(self, seed: int = 0, dim: int = 32, layers: int = 1, heads: int = 2, max_len: int = 30,
                 dropout: float = 0.2, epochs: int = 30, lr: float = 3e-3, batch_size: int = 64):
        super().__init__(seed)
        self.dim, self.layers, self.heads, self.max_len = dim, layers, heads, max_len
        self.dropout, self.epochs, self.lr, self.batch_size = dropout, epochs, lr, batch_size

    def _pad(self, seqs: list[np.ndarray]) -> torch.Tensor:
        out = torch.zeros(len(seqs), self.max_len, dtype=torch.long)
        for b, s in enumerate(seqs):
            s = s[-self.max_len:]
            if len(s):
                out[b, self.max_len - len(s):] = torch.from_numpy(np.asarray(s, np.int64) + 1)
        return out

    def fit(self, data, train_users):
        super().fit(data, train_users)
        torch.manual_seed(self.seed)
        self.net = _SASRecNet(data.n_items, self.dim, self.layers, self.heads, self.max_len, self.dropout)
        seqs = [data.history(u)[0] for u in range(data.n_users)]
        seqs = [s[-(self.max_len + 1):] for s in seqs if len(s) >= 2]
        inputs = self._pad([s[:-1] for s in seqs])
        targets = self._pad([s[1:] for s in seqs]) - 1  # -1 = padding, ignored
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(inputs), generator=gen)
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                logits = self.net.logits(self.net(inputs[idx]))
                loss = nn.functional.cross_entropy(logits.reshape(-1, data.n_items), targets[idx].reshape(-1),
                                                   ignore_index=-1)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        return self

    @torch.no_grad()
    def score(self, examples):
        hidden = self.net(self._pad([e.history_items for e in examples]))[:, -1]  # (B, dim)
        all_scores = self.net.logits(hidden)  # (B, n_items)
        items = torch.from_numpy(np.stack([np.asarray(e.items, np.int64) for e in examples]))
        return all_scores.gather(-1, items).float()

    def score_pool(self, example):
        return self.score([example])[0].numpy()


BASELINES: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (RandomRanker, PopularityRanker, ItemKNN, BPRMF, SASRec)
}


def make_baseline(name: str, data: InteractionData, train_users: np.ndarray, seed: int = 0,
                  **options) -> Recommender:
    """Build and fit the baseline called `name` (one of `BASELINES`) on the observed data."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; known baselines: {', '.join(BASELINES)}")
    return BASELINES[name](seed=seed, **options).fit(data, np.asarray(train_users))
