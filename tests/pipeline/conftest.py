"""The dataset fixtures' writers (tests/data/conftest.py), for the runner's end-to-end tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("data_fixtures", Path(__file__).parents[1] / "data" / "conftest.py")
_data_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_data_fixtures)


@pytest.fixture
def writers():
    return {
        "cub": _data_fixtures.write_cub, "cars": _data_fixtures.write_cars, "sop": _data_fixtures.write_sop,
        "inshop": _data_fixtures.write_inshop,
    }
