"""The uncertainty-aware critic and the KNN imputers: filling sparse feedback (FLEXREC.md section 4).

(ours) The critic predicts the user's *interest* in an item, a mean and a variance, on the [0, 1]
scale the need labels use; a need's label then comes from the need's own label function
(``flexrec.data.needs``) applied to the filled interest. Every need's label is a known function of
interest and of item facts the trainer can see (topics, popularity), so learning interest once
uses all the sparse feedback for every need, where a per-need model would split it. The label's
variance is the spread of that label function under the critic's Gaussian (Monte Carlo,
``label_samples`` draws), so any registered need gets a variance without a hand-derived formula.

Observed feedback is used as it is; the critic fills the rest. An observed label's variance is 0 by
default (``observed_var="zero"``) or, with ``observed_var="estimate"``, its user's feedback noise as the
trainer can estimate it (``feedback_noise_variance``): the observed value is one noisy reading of the
true label, and a variance of 0 hides its error from every variance-based weighting. The critic is
trained with Gaussian NLL on observed labels only (the sparse observed subset and the feedback in the
training users' histories), optionally as a deep ensemble whose spread adds epistemic variance.

Two options make the variance say more about where the critic errs (docs/uncertainty.md measures them):
``evidence``, the user's and the item's feedback counts as inputs (``flexrec.data.world.evidence_counts``),
so the critic can tell a cold user or item from a well-observed one; and a recalibration of the
variance fitted on held-out feedback (``VarianceRecalibration``), so that its intervals cover what they
claim. A third, ``cold_views``, also trains on every non-history label as a user with one or two history
items would show it, so that the critic can learn how little such a user's profile tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from flexrec.data.needs import get_need, label_context
from flexrec.data.world import InteractionData, evidence_counts


class Imputer(Protocol):
    def interest(self, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filled interest in [0, 1] and its variance. Shapes: items (K,) -> (K,), (K,)."""


def known_interest(data: InteractionData, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The feedback a trainer may use for ``users``: observed labels and history feedback, and on the implicit
    real-data protocol the items each user did not watch in the history period ("not watched", interest 0:
    ``InteractionData.history_negatives``), so the critic learns the truth's watched-and-liked target.

    Returns parallel arrays (user, item, interest in [0, 1]); observed wins over history.
    """
    us, its, vals = [], [], []
    negatives = data.history_negatives
    for u in users:
        h_items, h_fb, _ = data.history(int(u))
        o_items = data.observed.user_items(int(u))
        o_vals, _ = data.observed.lookup(int(u), o_items)
        n_items = negatives.user_items(int(u)) if negatives is not None else np.zeros(0, np.int64)
        n_vals = negatives.lookup(int(u), n_items)[0] if negatives is not None else np.zeros(0, np.float32)
        items = np.concatenate([n_items, h_items, o_items])
        values = np.concatenate([n_vals, h_fb, o_vals])
        us.append(np.full(len(items), u))
        its.append(items)
        vals.append(data.normalized_interest(values))
    users_, items_, values_ = (np.concatenate(x) if x else np.zeros(0) for x in (us, its, vals))
    return users_.astype(np.int64), items_.astype(np.int64), values_.astype(np.float32)


def _observed(data: InteractionData, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    raw, known = data.observed.lookup(user, items)
    return data.normalized_interest(raw), known


# ------------------------------------------------------------------------------------------------
# The heteroscedastic critic
# ------------------------------------------------------------------------------------------------


class _CriticNet(nn.Module):
    """MLP over [user emb, item emb, item topics, user topic profile, popularity] -> (mu, log var)."""

    def __init__(self, n_users: int, n_items: int, n_features: int, hidden: int, emb: int = 8):
        super().__init__()
        self.user = nn.Embedding(n_users, emb)
        self.item = nn.Embedding(n_items, emb)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)
        self.mlp = nn.Sequential(
            nn.Linear(2 * emb + n_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 2)
        )

    def forward(self, users: Tensor, items: Tensor, features: Tensor,
                user_scale: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """``user_scale`` (N,): 0 hides a row's user embedding (a training row posing as a cold user), 1 keeps it."""
        user = self.user(users) if user_scale is None else self.user(users) * user_scale[:, None]
        out = self.mlp(torch.cat([user, self.item(items), features], -1))
        return torch.sigmoid(out[:, 0]), nn.functional.softplus(out[:, 1]) + 1e-4


class Critic:
    """Heteroscedastic (optionally ensembled) interest model. Build with ``Critic.fit``.

    ``use_variance=False`` gives the "raw critic" ablation: the same mean, variance 0.
    """

    def __init__(self, data: InteractionData, nets: list[_CriticNet], use_variance: bool = True,
                 evidence: bool = False, recalibration: Optional["VarianceRecalibration"] = None,
                 observed_var: str = "zero", noise_var: Optional[np.ndarray] = None):
        if observed_var not in OBSERVED_VAR or (observed_var == "estimate" and noise_var is None):
            raise ValueError(f"observed_var must be one of {', '.join(OBSERVED_VAR)} (estimate with noise_var), "
                             f"got {observed_var!r}")
        self.data, self.nets, self.use_variance = data, nets, use_variance
        self.evidence, self.recalibration = evidence, recalibration
        self.observed_var, self.noise_var = observed_var, noise_var  # noise_var: (n_users,) on the [0, 1] scale
        self._user_profile, self._item_features = _feature_tables(data)
        self._user_feedback = evidence_counts(data)[0]  # history + observed, per user (`pair_groups`)
        if evidence:  # log counts, standardised over users / items
            self._user_evidence, self._item_evidence = (_standardised(np.log1p(c)) for c in evidence_counts(data))
            log_counts = np.log1p(evidence_counts(data)[0])
            self._user_evidence_stats = (float(log_counts.mean()), float(log_counts.std()))

    def _features(self, users: np.ndarray, items: np.ndarray,
                  cold: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Tensor:
        """Shapes: users, items (N,) -> (N, F). ``cold``: (profiles (N, 2T+1), feedback counts (N,)) that replace
        the users' own (`_cold_views`)."""
        profile = self._user_profile[users] if cold is None else cold[0]
        f = np.concatenate([self._item_features[items], profile], 1)
        topic_match = (self._item_features[items][:, : self.data.n_topics] * profile[:, : self.data.n_topics]).sum(1, keepdims=True)
        parts = [f, topic_match]
        if self.evidence:
            mean, std = self._user_evidence_stats  # a cold view's count, standardised as the users' own are
            user_evidence = self._user_evidence[users] if cold is None else (np.log1p(cold[1]) - mean) / (std + 1e-6)
            parts += [user_evidence[:, None].astype(np.float32), self._item_evidence[items][:, None]]
        return torch.from_numpy(np.concatenate(parts, 1).astype(np.float32))

    @torch.no_grad()
    def predict(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and total variance (aleatoric + ensemble spread). Shapes: (N,), (N,) -> (N,), (N,)."""
        mu, total = self._predict_raw(users, items)
        if isinstance(self.recalibration, GroupRecalibration):
            total = self.recalibration.apply(total, self.pair_groups(np.asarray(users), np.asarray(items)))
        elif self.recalibration is not None:
            total = self.recalibration.apply(total)
        return mu, total

    @torch.no_grad()
    def _predict_raw(self, users: np.ndarray, items: np.ndarray,
                     cold: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
        """`predict` before any recalibration; ``cold``: rows posed as cold users (`_features`, no user embedding)."""
        mu, var = self._members(users, items, cold)
        return mu.mean(0).numpy(), (var.mean(0) + mu.var(0, unbiased=False)).numpy()

    @torch.no_grad()
    def _members(self, users: np.ndarray, items: np.ndarray,
                 cold: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[Tensor, Tensor]:
        """Every ensemble member's mean and aleatoric variance. Shapes: (N,), (N,) -> (M, N), (M, N)."""
        u, i = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
        x = self._features(np.asarray(users), np.asarray(items), cold)
        scale = None if cold is None else torch.zeros(len(u))
        mus, variances = zip(*(net(u, i, x, scale) for net in self.nets))
        return torch.stack(mus), torch.stack(variances)

    def _observed_batch(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The observed feedback of many pools and where it is observed. Shapes: (N,), (N, K) -> (N, K), (N, K)."""
        obs, known = zip(*(_observed(self.data, int(u), it) for u, it in zip(users, items)))
        return np.stack(obs), np.stack(known)

    def member_interest_batch(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Each ensemble member's own mean interest of many pools, observed feedback in place where observed (the
        same in every member). Shapes: users (N,), items (N, K) -> (M, N, K)."""
        N, K = items.shape
        mus = self._members(np.repeat(users, K), items.reshape(-1))[0].reshape(-1, N, K).numpy()
        obs, known = self._observed_batch(users, items)
        return np.where(known[None], obs[None], mus).astype(np.float32)

    def pair_groups(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """`GroupRecalibration`'s group of each pair: COLD_USER (at most COLD_FEEDBACK feedback values), NEW_TOPIC
        (no topic of the item in the user's history), SEEN_TOPIC. Shapes: (N,), (N,) -> (N,) int."""
        groups = np.full(len(users), SEEN_TOPIC, np.int64)
        for user in np.unique(users):
            rows = np.flatnonzero(users == user)
            groups[rows[self.data.novel_items(int(user), items[rows])]] = NEW_TOPIC
        groups[self._user_feedback[users] <= COLD_FEEDBACK] = COLD_USER
        return groups

    def interest(self, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, var = self.interest_batch(np.array([user]), np.asarray(items, np.int64)[None])
        return mu[0], var[0]

    def interest_batch(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Many pools in one forward pass. Shapes: users (N,), items (N, K) -> (N, K), (N, K)."""
        N, K = items.shape
        mu, var = (x.reshape(N, K) for x in self.predict(np.repeat(users, K), items.reshape(-1)))
        var = var if self.use_variance else np.zeros_like(var)
        obs, known = self._observed_batch(users, items)
        estimate = self.observed_var == "estimate" and self.use_variance
        noise = self.noise_var[np.asarray(users, np.int64)][:, None] if estimate else 0.0
        return np.where(known, obs, mu).astype(np.float32), np.where(known, noise, var).astype(np.float32)

    @classmethod
    def fit(
        cls,
        data: InteractionData,
        train_users: np.ndarray,
        ensemble: int = 3,
        epochs: int = 50,
        hidden: int = 64,
        seed: int = 0,
        use_variance: bool = True,
        evidence: bool = False,
        calibration_users: Optional[np.ndarray] = None,
        heldout: float = 0.0,
        by_group: bool = False,
        observed_var: str = "zero",
        cold_views: bool = False,
    ) -> "Critic":
        """Gaussian-NLL training on the training users' known feedback only. ``evidence``: feedback counts as
        inputs. A `VarianceRecalibration` is fitted on ``calibration_users``' observed labels, or, with
        ``heldout`` > 0, on that share of the training users' observed labels, which the critic then does not
        train on: labels of the same users and the same kind of pair as the pools it fills; ``by_group`` (with
        ``heldout``): one recalibration per `pair_groups` group, the cold users' from the held-out labels posed
        as cold users' (`_cold_views`), since no held-out label of a cold user exists. ``observed_var``:
        "zero" or "estimate" (see `feedback_noise_variance`); ``cold_views``: also train on every non-history
        label posed as a cold user's (`_cold_views`), so that the critic learns how little one or two history
        items tell."""
        if observed_var not in OBSERVED_VAR:
            raise ValueError(f"observed_var must be one of {', '.join(OBSERVED_VAR)}, got {observed_var!r}")
        users, items, values = known_interest(data, train_users)
        if heldout > 0:
            h_users, h_items, h_values = observed_interest(data, train_users)
            pick = np.random.default_rng([seed, 13]).random(len(h_values)) < heldout
            h_users, h_items, h_values = h_users[pick], h_items[pick], h_values[pick]
            keep = ~np.isin(users * data.n_items + items, h_users * data.n_items + h_items)
            users, items, values = users[keep], items[keep], values[keep]
            calibration = (h_users, h_items, h_values)
        elif calibration_users is not None:
            calibration = observed_interest(data, calibration_users)
        else:
            calibration = None
        shell = cls(data, [], use_variance, evidence)
        x = shell._features(users, items)
        u, i, y = torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(values)
        n_own, scale = len(y), None
        if cold_views:
            pick = ~_in_history(data, users, items)
            profiles, counts = _cold_views(data, users[pick], np.random.default_rng([seed, 17]))
            x = torch.cat([x, shell._features(users[pick], items[pick], cold=(profiles, counts))])
            u, i, y = (torch.cat([t, t[torch.from_numpy(pick)]]) for t in (u, i, y))
            scale = torch.cat([torch.ones(n_own), torch.zeros(len(y) - n_own)])
        nets = []
        for member in range(ensemble):
            gen = torch.Generator().manual_seed(seed * 1000 + member)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + member)
                net = _CriticNet(data.n_users, data.n_items, x.shape[1], hidden)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-4)
            for _ in range(epochs):  # "epochs" of at most 4 batches: the cost stays flat in the data size
                order = torch.randperm(len(y), generator=gen)[: 4 * 2048]
                for batch in order.split(2048):
                    mu, var = net(u[batch], i[batch], x[batch], None if scale is None else scale[batch])
                    loss = nn.functional.gaussian_nll_loss(mu, y[batch], var)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            net.eval()
            nets.append(net)
        shell.nets = nets
        if calibration is not None and by_group:
            c_users, c_items, c_values = calibration
            mu, var = shell._predict_raw(c_users, c_items)
            groups = shell.pair_groups(c_users, c_items)
            mu_cold, var_cold = shell._predict_raw(c_users, c_items, _cold_views(data, c_users, np.random.default_rng([seed, 19])))
            fits = {g: VarianceRecalibration.fit(mu[groups == g], var[groups == g], c_values[groups == g])
                    for g in (NEW_TOPIC, SEEN_TOPIC)}
            shell.recalibration = GroupRecalibration({COLD_USER: VarianceRecalibration.fit(mu_cold, var_cold, c_values), **fits})
        elif calibration is not None:
            mu, var = shell.predict(*calibration[:2])
            shell.recalibration = VarianceRecalibration.fit(mu, var, calibration[2])
        if observed_var == "estimate":
            with torch.no_grad():
                mu = torch.stack([net(u[:n_own], i[:n_own], x[:n_own])[0] for net in nets]).mean(0).numpy()
            shell.noise_var = feedback_noise_variance(users, values - mu, data.n_users)
        shell.observed_var = observed_var
        return shell


# How an observed label's variance is set (--observed-var): "zero", the label as certain; "estimate", its user's
# feedback noise variance as `feedback_noise_variance` estimates it from the feedback a trainer may use.
OBSERVED_VAR = ("zero", "estimate")
# Pseudo-observations that pull a user's noise estimate toward the global one (a user with n feedback values gets
# n / (n + NOISE_PRIOR_COUNT) of their own mean squared residual)
NOISE_PRIOR_COUNT = 5.0


def feedback_noise_variance(users: np.ndarray, residuals: np.ndarray, n_users: int,
                            prior_count: float = NOISE_PRIOR_COUNT) -> np.ndarray:
    """Each user's feedback noise variance: the mean squared residual of their feedback against the critic's mean,
    shrunk toward the mean over all feedback by ``prior_count`` pseudo-observations (users without feedback get
    the global value). The residual holds the critic's misfit too, which with one reading per pair cannot be told
    apart from noise, so this errs on the wide side. Shapes: users, residuals (N,) -> (n_users,)."""
    sq = np.asarray(residuals, np.float64) ** 2
    pooled = float(sq.mean()) if len(sq) else 0.0
    count = np.bincount(users, minlength=n_users)
    total = np.bincount(users, weights=sq, minlength=n_users)
    return ((total + prior_count * pooled) / (count + prior_count)).astype(np.float32)


def _in_history(data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Which (user, item) pairs are history interactions. Shapes: (N,), (N,) -> (N,) bool."""
    owners = np.repeat(np.arange(data.n_users), np.diff(data.history_ptr))
    return np.isin(np.asarray(users, np.int64) * data.n_items + items, owners * data.n_items + data.history_items)


def _cold_views(data: InteractionData, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each row's user, the profile (`_feature_tables`) of a random one or two of their history items, as a cold
    user's would be, and that number of items. Shapes: users (N,) -> profiles (N, 2T+1), counts (N,)."""
    profiles = np.zeros((len(users), 2 * data.n_topics + 1), np.float32)
    counts = np.zeros(len(users), np.int64)
    for n, user in enumerate(users):
        items, fb, _ = data.history(int(user))
        keep = rng.permutation(len(items))[: rng.integers(1, 3)]
        if len(keep):
            profiles[n] = _profile(data.item_topics[items[keep]], data.normalized_interest(fb[keep]))
        counts[n] = len(keep)
    return profiles, counts


def _profile(topics: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """A user's [topic shares, mean feedback per topic, mean feedback] from their history items' topics and
    normalised feedback. Shapes: topics (h, T), fb (h,) with h >= 1 -> (2T+1,)."""
    T = topics.shape[1]
    topics = topics.astype(np.float32)
    count = topics.sum(0)
    row = np.zeros(2 * T + 1, np.float32)
    row[:T] = count / max(len(fb), 1)
    row[T : 2 * T] = (topics * fb[:, None]).sum(0) / np.maximum(count, 1.0)
    row[2 * T] = fb.mean()
    return row


def observed_interest(data: InteractionData, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The observed labels (outside the histories: the kind of pair a pool's critic fill is for) of ``users``,
    as parallel arrays (user, item, interest in [0, 1]). Shapes: -> (N,), (N,), (N,)."""
    items = [data.observed.user_items(int(u)) for u in users]
    values = [data.normalized_interest(data.observed.lookup(int(u), it)[0]) for u, it in zip(users, items)]
    counts = [len(it) for it in items]
    if not sum(counts):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.repeat(np.asarray(users, np.int64), counts), np.concatenate(items).astype(np.int64),
            np.concatenate(values).astype(np.float32))


# The standard normal's two-sided quantiles: |z| <= Z50 for 50% of draws, <= Z90 for 90%.
Z50, Z90 = 0.6745, 1.6449
_FACTORS = np.exp(np.linspace(np.log(0.01), np.log(100.0), 601))  # variance factors VarianceRecalibration tries


@dataclass
class VarianceRecalibration:
    """A post-hoc rescaling of predicted variances, fitted on held-out labels: var -> var * scale(var).

    The predicted variances are cut into ``buckets`` quantile buckets; in each, the scale is the one that
    brings the central 50% and 90% Gaussian intervals closest to nominal coverage together (the least
    |coverage50 - 0.5| + |coverage90 - 0.9| on a grid of factors 0.01..100). For Gaussian residuals that is
    the true ratio of variances; one factor cannot fix both intervals where the residuals' shape is not
    Gaussian (e.g. light tails: the 90% interval too wide when the 50% one is right). Between bucket
    centres the log scale is interpolated, beyond them held, so the map is smooth and defined for any variance.

    Shapes: centres, scales (buckets,): log variance at each bucket's median and its variance factor.
    """

    centres: np.ndarray
    scales: np.ndarray

    @classmethod
    def fit(cls, mu: np.ndarray, var: np.ndarray, values: np.ndarray, buckets: int = 5) -> "VarianceRecalibration":
        """Shapes: mu, var, values (N,); N >= buckets (fewer labels: one bucket)."""
        if len(values) == 0:
            return cls(np.zeros(1), np.ones(1))
        buckets = max(1, min(buckets, len(values) // 50))  # at least ~50 labels a bucket
        log_var = np.log(np.maximum(var, 1e-12))
        z = np.abs(values - mu) / np.sqrt(np.maximum(var, 1e-12))
        edges = np.quantile(log_var, np.linspace(0, 1, buckets + 1))
        which = np.clip(np.searchsorted(edges, log_var, side="right") - 1, 0, buckets - 1)
        centres, scales = [], []
        for b in range(buckets):
            zb = z[which == b]
            if len(zb) == 0:
                continue
            centres.append(float(np.median(log_var[which == b])))
            z_scaled = zb[None, :] / np.sqrt(_FACTORS)[:, None]  # (factors, n)
            miss = np.abs((z_scaled <= Z50).mean(1) - 0.5) + np.abs((z_scaled <= Z90).mean(1) - 0.9)
            scales.append(float(_FACTORS[np.argmin(miss)]))
        return cls(np.asarray(centres), np.maximum(np.asarray(scales), 1e-6))

    def apply(self, var: np.ndarray) -> np.ndarray:
        """Shapes: (N,) -> (N,)."""
        log_var = np.log(np.maximum(var, 1e-12))
        factor = np.exp(np.interp(log_var, self.centres, np.log(self.scales)))
        return (np.asarray(var) * factor).astype(np.asarray(var).dtype)


# `Critic.pair_groups`: a user with at most COLD_FEEDBACK feedback values (history + observed) is cold.
COLD_USER, NEW_TOPIC, SEEN_TOPIC = 0, 1, 2
COLD_FEEDBACK = 2


@dataclass
class GroupRecalibration:
    """One `VarianceRecalibration` per group of pairs (`Critic.pair_groups`): a recalibration by predicted-variance
    bucket alone cannot reorder variances that are in the wrong order across groups (cold users' and new topics'
    variances below those of well-known pairs although their errors are larger: docs/uncertainty.md).

    Shapes: parts maps a group id to its recalibration; ``apply`` takes var (N,) and groups (N,)."""

    parts: dict

    def apply(self, var: np.ndarray, groups: np.ndarray) -> np.ndarray:
        out = np.asarray(var).copy()
        for g, part in self.parts.items():
            out[groups == g] = part.apply(out[groups == g])
        return out


def coverage(mu: np.ndarray, var: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Shares of ``values`` inside the central 50% and 90% Gaussian intervals of (mu, var). Shapes: (N,) -> 2 floats."""
    z = np.abs(values - mu) / np.sqrt(np.maximum(var, 1e-12))
    return float((z <= Z50).mean()), float((z <= Z90).mean())


def _standardised(x: np.ndarray) -> np.ndarray:
    return ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)


def _feature_tables(data: InteractionData) -> tuple[np.ndarray, np.ndarray]:
    """Per-user [topic shares, mean feedback per topic, mean feedback] and per-item
    [topic multi-hot, log popularity (standardised)]. Shapes: (n_users, 2T+1), (n_items, T+1)."""
    T = data.n_topics
    profile = np.zeros((data.n_users, 2 * T + 1), np.float32)
    for u in range(data.n_users):
        items, fb, _ = data.history(u)
        if len(items):
            profile[u] = _profile(data.item_topics[items], data.normalized_interest(fb))
    pop = np.log1p(data.item_popularity.astype(np.float32))
    pop = (pop - pop.mean()) / (pop.std() + 1e-6)
    item = np.concatenate([data.item_topics.astype(np.float32), pop[:, None]], 1)
    return profile, item


# ------------------------------------------------------------------------------------------------
# KNN imputers (the reward-source ablation)
# ------------------------------------------------------------------------------------------------


class KNNImputer:
    """User-KNN or item-KNN collaborative filtering over the known feedback (no variance).

    user: the mean-centred feedback of the ``k`` most similar users (cosine on centred rows) who
    rated the item; item: the user's own centred feedback on the ``k`` items most similar to it.
    Falls back to the user's mean feedback when no neighbour has rated.
    """

    def __init__(self, data: InteractionData, train_users: np.ndarray, kind: str = "user", k: int = 20):
        if kind not in ("user", "item"):
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        self.data, self.kind, self.k = data, kind, k
        users, items, values = known_interest(data, train_users)
        R = np.full((data.n_users, data.n_items), np.nan, np.float32)
        R[users, items] = values
        self.known = ~np.isnan(R)
        counts = self.known.sum(1)
        self.user_mean = np.where(counts > 0, np.nansum(R, 1) / np.maximum(counts, 1), 0.5).astype(np.float32)
        self.centred = np.where(self.known, R - self.user_mean[:, None], 0.0).astype(np.float32)
        M = self.centred if kind == "user" else self.centred.T
        norm = np.linalg.norm(M, axis=1, keepdims=True) + 1e-8
        self.sim = (M / norm) @ (M / norm).T
        np.fill_diagonal(self.sim, 0.0)

    def interest(self, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray(items, np.int64)
        preds = np.empty(len(items), np.float32)
        for n, item in enumerate(items):
            if self.kind == "user":
                sims, mask, vals = self.sim[user], self.known[:, item], self.centred[:, item]
            else:
                sims, mask, vals = self.sim[item], self.known[user], self.centred[user]
            cand = np.flatnonzero(mask)
            top = cand[np.argsort(-sims[cand])[: self.k]]
            weight = np.clip(sims[top], 0.0, None)
            delta = (weight * vals[top]).sum() / weight.sum() if weight.sum() > 0 else 0.0
            preds[n] = np.clip(self.user_mean[user] + delta, 0.0, 1.0)
        obs, known = _observed(self.data, user, items)
        return np.where(known, obs, preds).astype(np.float32), np.zeros(len(items), np.float32)


class ObservedOnly:
    """No imputation: unobserved interest counts as 0 with variance 0 (the sparse labels as they are)."""

    def __init__(self, data: InteractionData):
        self.data = data

    def interest(self, user: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        obs, known = _observed(self.data, user, np.asarray(items, np.int64))
        return np.where(known, obs, 0.0).astype(np.float32), np.zeros(len(items), np.float32)


# ------------------------------------------------------------------------------------------------
# From filled interest to filled need labels; calibration
# ------------------------------------------------------------------------------------------------


def fill_pools(data: InteractionData, imputer: Imputer, examples: list, label_samples: int = 16,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``filled_labels`` of many (user, items, need) examples. Shapes: -> (N, K), (N, K)."""
    users = np.array([ex.user for ex in examples])
    items = np.stack([ex.items for ex in examples])
    if hasattr(imputer, "interest_batch"):
        mu, var = imputer.interest_batch(users, items)
    else:
        mu, var = (np.stack(x) for x in zip(*(imputer.interest(int(u), it) for u, it in zip(users, items))))
    rng = np.random.default_rng([seed, 3])
    out = [_labels_at_interest(data, m, v, int(u), it, ex.need, label_samples, rng)
           for ex, u, it, m, v in zip(examples, users, items, mu, var)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def fill_member_pools(data: InteractionData, imputer: Imputer, examples: list) -> Optional[np.ndarray]:
    """Each critic ensemble member's labels of many (user, items, need) examples: the need's label function at the
    member's own mean interest (`Critic.member_interest_batch`). The spread of a reward computed from each member's
    labels is the critic's epistemic uncertainty about that reward, with the members' errors as correlated across a
    pool as they are (`flexrec.rl.member_reward_variance`). None for an imputer without that spread: a KNN imputer,
    the critic's mean alone (critic-mean), or a single member. Shapes: -> (N, M, K).
    """
    if not (isinstance(imputer, Critic) and imputer.use_variance and len(imputer.nets) > 1):
        return None
    users = np.array([ex.user for ex in examples])
    items = np.stack([np.asarray(ex.items, np.int64) for ex in examples])
    mus = imputer.member_interest_batch(users, items)  # (M, N, K)
    return np.stack([np.stack([label(mu) for mu in mus[:, n]])
                     for n, label in enumerate(_label_function(data, int(u), it, ex.need)
                                               for u, it, ex in zip(users, items, examples))])


def filled_labels(
    data: InteractionData,
    imputer: Imputer,
    user: int,
    items: np.ndarray,
    need: str,
    label_samples: int = 16,
    rng: Optional[np.random.Generator] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A pool's labels for a need from filled interest, and their variance.

    The mean is the need's label function at the filled interest; the variance is its Monte-Carlo
    spread when the unobserved interest is drawn from N(mu, var) (clipped to [0, 1]).
    Shapes: items (K,) -> labels (K,), label_var (K,).
    """
    items = np.asarray(items, np.int64)
    mu, var = imputer.interest(user, items)
    return _labels_at_interest(data, mu, var, user, items, need, label_samples, rng)


def _labels_at_interest(data: InteractionData, mu: np.ndarray, var: np.ndarray, user: int, items: np.ndarray,
                        need: str, label_samples: int, rng: Optional[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
    """``filled_labels`` from an already filled interest (mu, var). Shapes: mu, var, items (K,) -> (K,), (K,)."""
    items = np.asarray(items, np.int64)
    label = _label_function(data, user, items, need)
    labels = label(mu)
    if not np.any(var > 0) or label_samples < 2:
        return labels, np.zeros_like(labels)
    rng = rng or np.random.default_rng([user, len(items)])
    draws = [label(np.clip(mu + np.sqrt(var) * rng.standard_normal(len(items)), 0.0, 1.0).astype(np.float32))
             for _ in range(label_samples)]
    return labels, np.var(np.stack(draws), 0).astype(np.float32)


def _label_function(data: InteractionData, user: int, items: np.ndarray, need: str):
    """The need's labels of one pool as a function of the pool's interest (every item's given), its context built
    once. Shapes: interest (K,) -> labels (K,) float32."""
    fn = get_need(need).label_fn
    ctx = label_context(data, user, np.asarray(items, np.int64), observed=True)
    ctx.known = np.ones(len(items), bool)

    def label(interest: np.ndarray) -> np.ndarray:
        ctx.interest = interest
        return np.asarray(fn(ctx), np.float32)

    return label


@dataclass
class Calibration:
    """How well the critic's Gaussian fits held-out feedback (validation users' observed labels)."""

    n: int
    nll: float  # mean Gaussian negative log-likelihood
    rmse: float
    coverage_50: float  # share of labels inside the central 50% interval (ideal 0.50)
    coverage_90: float  # ... inside the central 90% interval (ideal 0.90)
    rmse_vs_truth: float  # every item (of known truth) of (up to) 20 validation users, against the true interest

    def line(self) -> str:
        return (
            f"critic calibration on {self.n} validation labels: NLL {self.nll:.3f}, RMSE {self.rmse:.3f}, "
            f"50% interval covers {self.coverage_50:.2f}, 90% covers {self.coverage_90:.2f}; "
            f"RMSE vs true interest {self.rmse_vs_truth:.3f}"
        )


def calibrate(critic: Critic, data: InteractionData, val_users: np.ndarray) -> Calibration:
    users, items, values = known_interest(data, val_users)
    mu, var = critic.predict(users, items)
    sd = np.sqrt(var)
    z = np.abs(values - mu) / sd
    nll = 0.5 * (np.log(2 * np.pi * var) + z**2)
    # Against the truth (known everywhere in the synthetic world): every item of a few val users; on the
    # real-data protocol (pools only of items of known truth) the items whose truth is known.
    per_user = [data.true_interest.user_items(int(u)) if data.pools_from_known else np.arange(data.n_items)
                for u in val_users[:20]]
    t_users = np.concatenate([np.full(len(items), u) for u, items in zip(val_users[:20], per_user)])
    t_items = np.concatenate(per_user)
    truth = np.concatenate([data.true_interest.lookup(int(u), items)[0] for u, items in zip(val_users[:20], per_user)])
    t_mu, _ = critic.predict(t_users, t_items)
    rmse_truth = float(np.sqrt(np.mean((data.normalized_interest(truth) - t_mu) ** 2)))
    return Calibration(
        n=len(values),
        nll=float(nll.mean()),
        rmse=float(np.sqrt(np.mean((values - mu) ** 2))),
        coverage_50=float((z <= 0.6745).mean()),
        coverage_90=float((z <= 1.6449).mean()),
        rmse_vs_truth=rmse_truth,
    )


# The share of the training users' observed labels that --critic-recalibrate heldout keeps from the critic
HELDOUT_SHARE = 0.2
# --critic-recalibrate: none; val (the validation users' observed labels); heldout (HELDOUT_SHARE of the training
# users'); heldout-groups (the same, one recalibration per `Critic.pair_groups` group)
RECALIBRATE = ("none", "val", "heldout", "heldout-groups")


def build_imputer(kind: str, data: InteractionData, train_users: np.ndarray, ensemble: int = 3, epochs: int = 50,
                  hidden: int = 64, knn: int = 20, seed: int = 0, evidence: bool = False, recalibrate: str = "none",
                  val_users: Optional[np.ndarray] = None, observed_var: str = "zero", cold_views: bool = False) -> Imputer:
    """critic | critic-mean | user-knn | item-knn | observed. ``evidence``, ``observed_var``, ``cold_views``: see
    `Critic.fit`; ``recalibrate``: "none", "val" (on ``val_users``' observed labels) or "heldout" (on
    HELDOUT_SHARE of the training users')."""
    if recalibrate not in RECALIBRATE or (recalibrate == "val" and val_users is None):
        raise ValueError(f"recalibrate must be none, val (with val_users), heldout or heldout-groups, got {recalibrate!r}")
    if kind in ("critic", "critic-mean"):
        return Critic.fit(data, train_users, ensemble, epochs, hidden, seed, use_variance=kind == "critic",
                          evidence=evidence, calibration_users=val_users if recalibrate == "val" else None,
                          heldout=HELDOUT_SHARE if recalibrate.startswith("heldout") else 0.0,
                          by_group=recalibrate == "heldout-groups", observed_var=observed_var,
                          cold_views=cold_views)
    if kind in ("user-knn", "item-knn"):
        return KNNImputer(data, train_users, kind.split("-")[0], knn)
    if kind == "observed":
        return ObservedOnly(data)
    raise ValueError(f"unknown imputer {kind!r}")
