"""The shared metrics directory: fresh per server, removed at exit, dead workers' gauges dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onegate.observability.multiprocess import ENV, metrics_directory, worker_exited


def test_a_fresh_directory_is_named_in_the_environment_then_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old run")
    monkeypatch.setenv(ENV, str(stale))
    with metrics_directory() as path:
        assert os.environ[ENV] == path != str(stale)
        assert os.listdir(path) == []  # never the stale files of another run
        (Path(path) / "counter_2.db").write_bytes(b"this run")
    assert not os.path.exists(path)
    assert os.environ[ENV] == str(stale)  # the outer value is back


def test_the_variable_is_removed_when_there_was_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    with metrics_directory():
        assert ENV in os.environ
    assert ENV not in os.environ


def test_a_dead_workers_live_gauges_go_and_its_counters_stay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path))
    names = [
        "counter_41.db",
        "histogram_41.db",
        "gauge_livesum_41.db",
        "gauge_livemin_41.db",
        "gauge_livemax_41.db",
        "gauge_livesum_42.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    worker_exited(41)
    assert sorted(os.listdir(tmp_path)) == [
        "counter_41.db",
        "gauge_livesum_42.db",
        "histogram_41.db",
    ]


def test_outside_a_server_a_dead_worker_is_nothing_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    worker_exited(12345)
