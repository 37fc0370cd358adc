"""Every loader: the installed ML-100K, and fixtures in the GroupLens, ML-1M and KuaiRec layouts."""

import importlib.util
import logging

import numpy as np
import pytest

from flexrec.data import build_examples, load, split_users
from flexrec.data.movielens import recbole_ml100k_dir


def check_common(data, expect_users):
    """Invariants every loader must keep."""
    assert data.n_users == expect_users
    assert data.item_topics.shape == (data.n_items, data.n_topics)
    assert data.daily_popularity.shape[1] == data.n_items
    assert len(data.history_ptr) == data.n_users + 1 and data.history_ptr[-1] == len(data.history_items)
    for u in range(data.n_users):
        items, _, days = data.history(u)
        assert np.all(np.diff(days) >= 0)  # time-ordered
        assert days.max(initial=-1) <= data.cutoff_day[u]
        # no candidate with a label is in the history
        assert not np.isin(data.true_interest.user_items(u), items).any()
    assert 0 < len(data.observed) <= len(data.true_interest)


def has_recbole():
    return importlib.util.find_spec("recbole") is not None


@pytest.mark.skipif(not has_recbole(), reason="needs pip install --no-deps recbole==1.2.1")
def test_ml100k_from_installed_recbole():
    data = load("ml-100k")
    assert (data.n_users, data.n_items, data.n_topics) == (943, 1682, 19)
    assert len(data.history_items) + len(data.true_interest) == 100_000
    assert data.item_titles[0] == "Toy Story (1995)"
    assert set(data.topic_names) >= {"Drama", "Comedy", "Film-Noir"}
    # Held-out ratings are each user's latest: none is earlier than any history day.
    # The real-data protocol ("known"): the last 20 ratings (leaving at least 10) are the future and the pool.
    lengths = np.diff(data.history_ptr)
    counts = lengths + np.bincount(data.true_interest.keys // data.n_items, minlength=data.n_users)
    assert lengths.min() >= 10 and len(data.true_interest) == np.minimum(20, counts - 10).sum()
    examples = build_examples(data, split="test", K=20, max_users=5)
    full = [u for u in split_users(data)["test"][:5] if len(data.true_interest.user_items(u)) == 20]
    assert len(examples) == 3 * len(full) > 0 and all(e.K == 20 for e in examples)  # fewer than 30 ratings: skipped
    assert all(not np.isin(e.items, e.history_items).any() for e in examples)
    assert all(set(e.items) == set(data.true_interest.user_items(e.user)) for e in examples)
    sparse = load("ml-100k", protocol="sparse")
    assert np.diff(sparse.history_ptr).min() >= 10 and len(sparse.true_interest) == 9430


def test_ml100k_missing_recbole_names_the_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps recbole==1.2.1"):
        recbole_ml100k_dir()


def test_ml100k_grouplens_layout(grouplens_dir):
    data = load("ml-100k", grouplens_dir, n_heldout=4, protocol="sparse")
    check_common(data, 12)
    assert data.n_items == 40 and data.item_titles[0] == "Movie 1 (1991)"
    assert len(data.true_interest) == 12 * 4 and np.diff(data.history_ptr).tolist() == [12] * 12
    examples = build_examples(data, split="all", K=20)
    assert len(examples) == 36
    for e in examples:  # every held-out item is a candidate (known_share), none in the history
        assert np.isin(data.true_interest.user_items(e.user), e.items).all()


def test_ml100k_recbole_layout_from_path(tmp_path, grouplens_dir):
    (tmp_path / "rb").mkdir()
    data_lines = (grouplens_dir / "u.data").read_text().splitlines()
    (tmp_path / "rb" / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(data_lines) + "\n")
    (tmp_path / "rb" / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\tMovie {i}\t1995\tDrama Comedy\n" for i in range(1, 41)))
    data = load("ml-100k", tmp_path / "rb")
    check_common(data, 12)
    assert data.topic_names == ["Comedy", "Drama"] and data.item_titles[0] == "Movie 1 (1995)"


def test_ml100k_missing_files_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="u.data"):
        load("ml-100k", tmp_path)
    (tmp_path / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
    with pytest.raises(FileNotFoundError, match="ml-100k.item not found"):
        load("ml-100k", tmp_path)
    (tmp_path / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                           "2\tA\t1990\tDrama\n")
    with pytest.raises(ValueError, match=r"ml-100k.inter, line 1, column 'timestamp': missing column"):
        load("ml-100k", tmp_path)


def test_ml1m_layout(ml1m_dir):
    data = load("ml-1m", ml1m_dir)
    check_common(data, 12)
    assert data.n_items == 40 and data.topic_names == ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]
    assert data.item_topics.sum(1).tolist() == [2] * 40  # two genres each
    assert len(data.true_interest) == 12 * 6  # the last 20 ratings, leaving 10 of the 16 in the history
    assert len(load("ml-1m", ml1m_dir, protocol="sparse").true_interest) == 12 * 8  # 10, capped at half of 16


def test_ml1m_bad_inputs(ml1m_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-path DIR"):
        load("ml-1m")
    (ml1m_dir / "movies.dat").unlink()
    with pytest.raises(FileNotFoundError, match=r"movies.dat not found; expected ML-1M movies.dat: MovieID::Title"):
        load("ml-1m", ml1m_dir)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ratings.dat").write_text("1::2::3\n")
    with pytest.raises(ValueError, match=r"ratings.dat, line 1: expected at least 4 fields"):
        load("ml-1m", tmp_path / "bad")


def test_unrated_catalogue_gaps_are_counted(ml1m_dir, caplog):
    with open(ml1m_dir / "ratings.dat", "a") as f:
        f.write("1::999::5::880000001\n")
    with caplog.at_level(logging.WARNING):
        data = load("ml-1m", ml1m_dir)
    assert "1 rated items have no catalogue entry" in caplog.text and "item 999" in data.item_titles


def test_kuairec_layout(kuairec_dir):
    data = load("kuairec", kuairec_dir)
    check_common(data, 8)  # the small-matrix users
    assert data.n_items == 80 and data.candidate_items.tolist() == list(range(40))
    assert np.diff(data.history_ptr).tolist() == [12] * 8  # big-matrix rows of those users
    assert len(data.true_interest) == 8 * 40 and data.interest_range == (0.0, 2.0)
    assert data.item_titles[1] == "clip 1" and data.item_titles[2] == "Food"
    assert data.item_topics[0].sum() == 2 and data.topic_names[-1] == "category 7"
    assert data.daily_popularity.shape[0] >= 12 and data.cutoff_day.max() <= data.daily_popularity.shape[0]
    examples = build_examples(data, split="all")
    assert len(examples) == 24 and all(np.isin(e.items, data.candidate_items).all() for e in examples)


def test_kuairec_without_big_matrix_uses_early_small_rows(kuairec_dir):
    (kuairec_dir / "big_matrix.csv").unlink()
    (kuairec_dir / "kuairec_caption_category.csv").unlink()
    data = load("kuairec", kuairec_dir, n_history=5)
    check_common(data, 8)
    assert np.diff(data.history_ptr).tolist() == [5] * 8 and len(data.true_interest) == 8 * 35
    assert data.item_titles[1] == "video 1"


def test_kuairec_bad_inputs(kuairec_dir):
    with pytest.raises(FileNotFoundError, match="KuaiRec 2.0 data/ folder"):
        load("kuairec")
    text = (kuairec_dir / "item_categories.csv").read_text().replace("feat", "features")
    (kuairec_dir / "item_categories.csv").write_text(text)
    with pytest.raises(ValueError, match=r"item_categories.csv, line 1, column 'feat': missing column"):
        load("kuairec", kuairec_dir)
    (kuairec_dir / "small_matrix.csv").unlink()
    with pytest.raises(FileNotFoundError, match="small_matrix.csv not found.*user_id, video_id"):
        load("kuairec", kuairec_dir)


def test_movielens_holds_out_each_users_latest_ratings(grouplens_dir):
    data = load("ml-100k", grouplens_dir, n_heldout=4)
    rows = [line.split("\t") for line in (grouplens_dir / "u.data").read_text().splitlines()]
    for u, key in enumerate(data.user_keys):
        mine = sorted((int(r[3]), r[1]) for r in rows if r[0] == key)
        latest = {data.item_keys.index(item) for _, item in mine[-4:]}
        assert set(data.true_interest.user_items(u).tolist()) == latest
        history = [data.item_keys[i] for i in data.history(u)[0]]
        assert history == [item for _, item in mine[:-4]]  # time-ordered, and all before the held-out


def test_kuairec_keeps_the_latest_max_history_rows(kuairec_dir):
    full, short = load("kuairec", kuairec_dir), load("kuairec", kuairec_dir, max_history=5)
    assert np.diff(short.history_ptr).tolist() == [5] * 8
    for u in range(8):
        np.testing.assert_array_equal(short.history(u)[0], full.history(u)[0][-5:])


def test_kuairec_rows_with_missing_values_are_dropped_and_counted(kuairec_dir, caplog):
    with open(kuairec_dir / "small_matrix.csv", "a") as f:
        f.write("0,39,1000,2000,,,,0.5\n")  # no timestamp, as in some official rows
    with caplog.at_level(logging.WARNING):
        data = load("kuairec", kuairec_dir)
    assert "dropped 1 rows of small_matrix.csv with a missing value" in caplog.text
    assert len(data.true_interest) == 8 * 40
