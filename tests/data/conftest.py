"""Shared fixtures: a small synthetic world, the tiny tokenizer, and writers of small files in the
official MovieLens / KuaiRec layouts (the real files are not obtainable here, or not committable)."""

from __future__ import annotations

import csv
from datetime import date, datetime, timezone

import numpy as np
import pytest

from flexrec.data import SyntheticWorld, train_tiny_tokenizer
from flexrec.data.movielens import ML100K_GENRES


@pytest.fixture(scope="session")
def world():
    return SyntheticWorld(seed=0, n_users=60, n_items=120, n_topics=6)


@pytest.fixture(scope="session")
def tokenizer():
    return train_tiny_tokenizer()


def fake_ratings(n_users: int = 12, n_items: int = 40, per_user: int = 16, seed: int = 0):
    """(user, item, rating, timestamp) rows: each user rates distinct items over ~60 days."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), per_user, replace=False):
            rows.append((u, int(i), int(rng.integers(1, 6)), 880000000 + int(rng.integers(0, 60 * 86400))))
    return rows


@pytest.fixture
def grouplens_dir(tmp_path):
    """ML-100K in the GroupLens layout: u.data (tab) and u.item ('|', 19 genre flags), latin-1."""
    rows = fake_ratings()
    (tmp_path / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    lines = []
    for i in range(1, 41):
        flags = ["0"] * len(ML100K_GENRES)
        flags[1 + i % 18] = "1"
        lines.append("|".join([str(i), f"Movie {i} (199{i % 10})", "01-Jan-1995", "", "http://x"] + flags))
    (tmp_path / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return tmp_path


@pytest.fixture
def ml1m_dir(tmp_path):
    """ML-1M layout: ratings.dat and movies.dat with '::' separators, genres '|'-separated."""
    rows = fake_ratings(seed=1)
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    genres = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]
    (tmp_path / "movies.dat").write_text("".join(
        f"{i}::Film {i} (2000)::{genres[i % 5]}|{genres[(i + 2) % 5]}\n" for i in range(1, 41)), encoding="latin-1")
    (tmp_path / "users.dat").write_text("".join(f"{u}::F::25::4::12345\n" for u in range(1, 13)))
    return tmp_path


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def kuairec_dir(tmp_path):
    """KuaiRec 2.0 data/ layout: a dense small matrix (8 users x 40 videos), a big matrix for
    histories, categories, daily features and captions; columns as in the official files."""
    rng = np.random.default_rng(2)
    base = int(datetime(2020, 7, 5, tzinfo=timezone.utc).timestamp())
    header = ["user_id", "video_id", "play_duration", "video_duration", "time", "date", "timestamp", "watch_ratio"]

    def row(u, v, t):
        when = datetime.fromtimestamp(t, timezone.utc)
        return [u, v, 1000, 2000, when.strftime("%Y-%m-%d %H:%M:%S"), when.strftime("%Y%m%d"), float(t),
                round(float(rng.uniform(0, 3)), 3)]

    write_csv(tmp_path / "small_matrix.csv", header,
              [row(u, v, base + 10 * 86400 + int(rng.integers(0, 86400 * 5))) for u in range(8) for v in range(40)])
    write_csv(tmp_path / "big_matrix.csv", header,
              [row(u, int(v), base + int(rng.integers(0, 86400 * 9))) for u in range(10)
               for v in rng.choice(np.arange(40, 80), 12, replace=False)])
    write_csv(tmp_path / "item_categories.csv", ["video_id", "feat"],
              [[v, f"[{v % 5}]" if v % 3 else f"[{v % 5}, 7]"] for v in range(80)])
    daily_header = ["video_id", "date", "author_id", "video_type", "play_cnt", "show_cnt"]
    write_csv(tmp_path / "item_daily_features.csv", daily_header,
              [[v, date.fromordinal(date(2020, 7, 5).toordinal() + d).strftime("%Y%m%d"), 1, "NORMAL",
                int(rng.integers(0, 100)), 5] for v in range(80) for d in range(12)])
    write_csv(tmp_path / "kuairec_caption_category.csv",
              ["video_id", "manual_cover_text", "caption", "topic_tag", "first_level_category_name"],
              [[v, "", f"clip {v}" if v % 2 else "", "[]", "Food"] for v in range(80)])
    return tmp_path
