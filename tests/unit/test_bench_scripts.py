"""Every benchmark script imports: they run rarely, so a moved module would otherwise go unseen."""

import importlib
import pkgutil

import pytest

import bench


@pytest.mark.parametrize("name", sorted(module.name for module in pkgutil.iter_modules(bench.__path__)))
def test_benchmark_imports(name):
    module = importlib.import_module(f"bench.{name}")
    assert module.__doc__, f"bench.{name} says what it measures in its docstring"
