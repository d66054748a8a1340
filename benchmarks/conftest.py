"""pytest setup for the pytest-benchmark files in benchmarks/ (bench_*.py).

How the two usual commands combine with pytest-benchmark's options:

- `pytest --benchmark-only` (or `pytest benchmarks/...`, or any run given --benchmark-enable,
  --benchmark-json, --benchmark-save or --benchmark-autosave): the benchmarks are timed as usual.
- `python -m pytest` with no paths (the test run, collecting `testpaths`): the benchmarks run ONCE
  each, untimed, as smoke tests -- exactly pytest-benchmark's `--benchmark-disable`, set here
  rather than in `addopts` because `--benchmark-disable` and `--benchmark-only` together are a
  usage error. `--benchmark-skip` still skips them outright.

The benchmark files import the repo's packages (backends, models) without an install: a framework's
tox environment (skip_install) runs them from the repo root too, and the root conftest.py puts the
repo on sys.path.
"""
import pytest


def _wants_timing(option):
    return any(getattr(option, name, None) for name in (
        "benchmark_only", "benchmark_enable", "benchmark_json", "benchmark_save",
        "benchmark_autosave", "benchmark_compare"))


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure reads the options
def pytest_configure(config):
    if not hasattr(config.option, "benchmark_disable"):  # pytest-benchmark not installed
        return
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS and not _wants_timing(config.option):
        config.option.benchmark_disable = True
