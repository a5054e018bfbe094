import random
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.config import load_config
from autointerp.store.engine import Store
from tests.factory import Planted, planted_corpus


@pytest.fixture(autouse=True)
def _seeds():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def planted(tmp_path: Path) -> Planted:
    return planted_corpus(tmp_path / "corpus")


@pytest.fixture
def config(planted: Planted):
    return load_config(planted.config)


@pytest.fixture
def store(config) -> Store:
    s = Store(config.db_url)
    yield s
    s.close()
