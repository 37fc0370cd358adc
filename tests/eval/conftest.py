import pytest

from flexrec.data import SyntheticWorld


@pytest.fixture(scope="session")
def world():
    return SyntheticWorld(seed=0, n_users=60, n_items=120, n_topics=6)
