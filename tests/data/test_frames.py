"""Your own data: RecBole atomic files, CSV and in-memory frames through flexrec.data.frames.

ML-100K (the copy bundled in the recbole wheel) is exported to RecBole atomic files and to CSV here, loaded
back through each path, and must give the InteractionData of the built-in loader, field for field.
"""

import csv
import dataclasses
import importlib.util

import numpy as np
import pytest

from flexrec.data import DataFileError, build_examples, from_frames, load, load_csv, load_recbole
from flexrec.data.frames import parse_spec
from flexrec.data.movielens import recbole_ml100k_dir

from test_data_loaders import check_common  # tests/data is on sys.path (pytest's rootdir-less import)


def assert_same_data(a, b):
    """Every field of two InteractionData equal (arrays by dtype and value)."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), f.name
        elif dataclasses.is_dataclass(x):
            for g in dataclasses.fields(x):
                assert np.array_equal(getattr(x, g.name), getattr(y, g.name)), f"{f.name}.{g.name}"
        else:
            assert x == y, f.name


def recbole_rows(path):
    with open(path, encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


@pytest.fixture(scope="module")
def ml100k():
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("needs pip install --no-deps recbole==1.2.1")
    folder = recbole_ml100k_dir()
    ratings = recbole_rows(folder / "ml-100k.inter")
    movies = [(m["item_id"], f"{m['movie_title']} ({m['release_year']})", m["class"].split())
              for m in recbole_rows(folder / "ml-100k.item")]
    # your own data splits by from_frames' default protocol ("sparse"); the builtin, asked for it, is the same
    return load("ml-100k", protocol="sparse"), ratings, movies


def test_ml100k_exported_to_recbole_loads_back_the_same(ml100k, tmp_path):
    builtin, ratings, movies = ml100k
    out = tmp_path / "export"
    out.mkdir()
    with open(out / "ml-100k.inter", "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        f.writelines(f"{r['user_id']}\t{r['item_id']}\t{r['rating']}\t{r['timestamp']}\n" for r in ratings)
    with open(out / "ml-100k.item", "w", encoding="utf-8") as f:
        f.write("item_id:token\ttitle:token_seq\tcategories:token_seq\n")
        f.writelines(f"{i}\t{title}\t{' '.join(genres)}\n" for i, title, genres in movies)
    assert_same_data(load(f"recbole:{out}"), builtin)


def test_ml100k_exported_to_csv_loads_back_the_same(ml100k, tmp_path):
    builtin, ratings, movies = ml100k
    with open(tmp_path / "ratings.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])  # MovieLens's CSV names: found without a mapping
        w.writerows([r["user_id"], r["item_id"], r["rating"], r["timestamp"]] for r in ratings)
    with open(tmp_path / "movies.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])  # titles with commas are quoted by the csv module
        w.writerows([i, title, "|".join(genres)] for i, title, genres in movies)
    data = load(f"csv:{tmp_path / 'ratings.csv'}", items=str(tmp_path / "movies.csv"))
    assert data.name == "ratings"  # named after the file
    assert_same_data(dataclasses.replace(data, name="ml-100k"), builtin)
    again = load_csv(tmp_path / "ratings.csv", tmp_path / "movies.csv", name="ml-100k")
    assert_same_data(again, builtin)


def small_frames():
    """Four users who each rate six of eight items over a few days, as dicts of columns."""
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}", int(rng.integers(1, 6)), 1_600_000_000 + 3600 * (7 * u + k))
            for u in range(4) for k, i in enumerate(rng.choice(8, 6, replace=False))]
    inter = {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows], "rating": [r[2] for r in rows],
             "timestamp": [r[3] for r in rows]}
    items = {"item_id": [f"i{i}" for i in range(8)], "title": [f"Film {i}" for i in range(8)],
             "categories": ["drama|comedy" if i % 2 else "horror" for i in range(8)]}
    return inter, items


def test_from_frames_accepts_columns_rows_and_a_mapping():
    inter, items = small_frames()
    data = from_frames(inter, items, n_heldout=2)
    check_common(data, 4)
    assert data.topic_names == ["comedy", "drama", "horror"] and data.item_titles[1] == "Film 1"
    assert data.interest_range == (1.0, 5.0) and len(data.true_interest) == 4 * 2
    rows = [dict(zip(inter, values)) for values in zip(*inter.values())]
    renamed = [{"who": r["user_id"], "what": r["item_id"], "stars": r["rating"], "when": r["timestamp"]} for r in rows]
    again = from_frames(renamed, items, {"user_id": "who", "item_id": "what", "rating": "stars", "timestamp": "when"},
                        n_heldout=2)
    assert_same_data(again, data)
    # ISO 8601 times read as the same instants (naive ones as UTC).
    from datetime import datetime, timezone
    iso = dict(inter, timestamp=[datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
                                 for t in inter["timestamp"]])
    assert_same_data(from_frames(iso, items, n_heldout=2), data)
    examples = build_examples(data, split="all", K=3)
    assert examples and all(e.K == 3 for e in examples)


def test_implicit_feedback_and_no_categories():
    inter, items = small_frames()
    del inter["rating"], items["categories"]
    data = from_frames(inter, items, {"rating": None, "categories": None}, n_heldout=2)
    assert data.interest_range == (0.0, 1.0) and set(data.true_interest.values.tolist()) == {1.0}
    assert data.n_topics == 0


def test_duplicates_are_an_error_or_keep_the_latest():
    inter, items = small_frames()
    for column in inter:
        inter[column].append(inter[column][0] if column != "timestamp" else 1_700_000_000)
    with pytest.raises(DataFileError, match=r"interactions, row 25, column 'item_id': user 'u0' has item "
                                            r"'i\d' again \(first at row 1\)"):
        from_frames(inter, items)
    data = from_frames(inter, items, duplicates="last", n_heldout=2)
    assert len(data.history_items) + len(data.true_interest) == 24


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


ITEMS = "item_id,title,categories\n1,A,x\n2,B,y|x\n3,C,z\n"
INTER = "user_id,item_id,rating,timestamp\n1,1,4,100\n1,2,5,200\n2,2,3,300\n2,3,1,400\n"


@pytest.mark.parametrize("inter, items, message", [
    ("user_id,item_id,timestamp\n1,1,100\n", ITEMS,
     r"inter.csv, line 1, column 'rating': missing column; the file has columns \['user_id', 'item_id', 'timestamp'\]"),
    (INTER.replace("1,2,5,200", "1,2,five,200"), ITEMS, r"inter.csv, line 3, column 'rating': 'five' is not a number"),
    (INTER.replace("2,3,1,400", "2,3,1,yesterday"), ITEMS,
     r"inter.csv, line 5, column 'timestamp': 'yesterday' is neither Unix seconds nor an ISO 8601"),
    (INTER + "2,9,4,500\n", ITEMS, r"inter.csv, line 6, column 'item_id': item '9' is not in .*items.csv"),
    (INTER + "1,2,4,500\n", ITEMS,
     r"inter.csv, line 6, column 'item_id': user '1' has item '2' again \(first at line 3\)"),
    (INTER, ITEMS + "2,B again,y\n", r"items.csv, line 5, column 'item_id': item '2' again \(first at line 3\)"),
    ("", ITEMS, r"inter.csv, line 1: empty file"),
    ("user_id,item_id,rating,timestamp\n", ITEMS, r"inter.csv: empty: no data rows after the header"),
    (INTER.replace("1,1,4,100", "1,1,4"), ITEMS, r"inter.csv, line 2: 3 fields, the header has 4"),
    (INTER, ITEMS, r"items.csv, column 'item_id': 3 items, fewer than the K=5 candidates a pool needs"),
])
def test_bad_files_name_the_file_line_and_column(tmp_path, inter, items, message):
    with pytest.raises(DataFileError, match=message):
        load_csv(write(tmp_path / "inter.csv", inter), write(tmp_path / "items.csv", items), K=5)


def test_good_small_files_load_and_the_spec_carries_a_mapping(tmp_path):
    write(tmp_path / "inter.csv", INTER.replace("rating", "stars"))
    write(tmp_path / "items.csv", ITEMS)
    assert parse_spec("r.csv?items=m.csv&rating=stars&categories=") == (
        "r.csv", {"items": "m.csv", "columns": {"rating": "stars", "categories": None}})
    data = load(f"csv:{tmp_path / 'inter.csv'}?items={tmp_path / 'items.csv'}&rating=stars", n_heldout=1)
    assert data.n_items == 3 and data.n_users == 2 and data.name == "inter"
    write(tmp_path / "twice.csv", INTER + "1,2,4,500\n")
    twice = load(f"csv:{tmp_path / 'twice.csv'}?items={tmp_path / 'items.csv'}&duplicates=last", n_heldout=1)
    assert len(twice.history_items) + len(twice.true_interest) == 4
    with pytest.raises(ValueError, match="the item file is missing"):
        load(f"csv:{tmp_path / 'inter.csv'}")


def test_recbole_dir_needs_one_inter_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected one RecBole NAME.inter file"):
        load_recbole(tmp_path)
    write(tmp_path / "mine.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t4\t100\n")
    with pytest.raises(FileNotFoundError, match="mine.item not found"):
        load(f"recbole:{tmp_path}")
    write(tmp_path / "mine.item", "item_id:token\ttitle:token_seq\tcategories:token_seq\n1\tA\tx y\n")
    data = load(f"recbole:{tmp_path}")
    assert data.name == "mine" and data.topic_names == ["x", "y"]


@pytest.mark.skipif(not (importlib.util.find_spec("pandas") or importlib.util.find_spec("pyarrow")),
                    reason="Parquet needs pandas or pyarrow")
def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    inter, items = small_frames()
    pq.write_table(pa.table(inter), tmp_path / "inter.parquet")
    pq.write_table(pa.table(items), tmp_path / "items.parquet")
    data = load(f"parquet:{tmp_path / 'inter.parquet'}", items=str(tmp_path / "items.parquet"), n_heldout=2)
    assert_same_data(data, from_frames(inter, items, name="inter", n_heldout=2))


def test_a_bad_file_stops_training_before_the_run_directory_exists(tmp_path, capsys):
    from flexrec.train.__main__ import main

    write(tmp_path / "inter.csv", INTER.replace("1,2,5,200", "1,2,five,200"))
    write(tmp_path / "items.csv", ITEMS)
    out = tmp_path / "run"
    assert main(["--data", f"csv:{tmp_path / 'inter.csv'}?items={tmp_path / 'items.csv'}", "--out", str(out)]) == 2
    assert "inter.csv, line 3, column 'rating': 'five' is not a number" in capsys.readouterr().err
    assert not out.exists()


def test_items_setting_and_relative_paths_reload_from_elsewhere(tmp_path, ml100k, monkeypatch):
    """--data csv:FILE --items FILE trains; the run's config holds absolute paths, so load_run works anywhere."""
    import csv
    import json

    import flexrec
    from flexrec.train.__main__ import main

    _, ratings, movies = ml100k
    users = sorted({r["user_id"] for r in ratings}, key=int)[:80]  # a slice of ML-100K, to train in seconds
    with open(tmp_path / "r.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["user_id", "item_id", "rating", "timestamp"])
        rows.writerows([[r["user_id"], r["item_id"], r["rating"], r["timestamp"]] for r in ratings
                        if r["user_id"] in set(users)])
    with open(tmp_path / "m.csv", "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["item_id", "title", "categories"])
        rows.writerows([[item, title, "|".join(genres)] for item, title, genres in movies])
    monkeypatch.chdir(tmp_path)
    assert main(["--data", "csv:r.csv", "--items", "m.csv", "--out", "run", "--sft-steps", "1", "--rl-steps", "0",
                 "--critic-epochs", "1", "--critic-ensemble", "1", "--eval-users", "4", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"] == f"csv:{tmp_path / 'r.csv'}" and saved["items"] == str(tmp_path / "m.csv")
    monkeypatch.chdir("/")
    assert len(flexrec.load_run(tmp_path / "run").examples("val")) > 0
