"""Scale-out through Ray, the optional `scale` extra (``pip install 'rankloop[scale]'``).

One switch turns it on: `using_ray(address)`, which the CLI's ``--ray [ADDRESS]`` opens around a
command. While it is open, the work that fans out goes to the cluster and everything else stays
as it is:

* corpus encoding runs as Ray Data ``map_batches`` over an actor pool, one model per actor,
  shard by shard (`rankloop.embed.shards`);
* experiment grids and seeds run as Ray tasks (`map_tasks`), one CPU each.

Results equal the local ones: each task runs the same function on the same inputs, the
driver puts the results back in input order, and encoding shards are the same row ranges.
Without ``--ray`` nothing imports Ray.

On one machine, ``--ray`` with no address starts a private Ray instance bound to 127.0.0.1;
with an address (``ray start --head`` prints it) it joins that cluster. Shards, checkpoints and
outputs are written by the driver or into the run's output folder, which every node must see
at the same path (a shared filesystem) when tasks write checkpoints (`rankloop loop`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

from rankloop.errors import ConfigError, RankloopError

T = TypeVar("T")
R = TypeVar("R")

_INSTALL_HINT = "install the scale extra: pip install 'rankloop[scale]'"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_active = False  # whether a `using_ray` block is open


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"--ray needs Ray, which is not installed: {_INSTALL_HINT}") from e
    return ray


def _loopback(address: str | None) -> bool:
    """True for no address (a private local instance) or a 127.0.0.1/localhost address."""
    if address is None or address == "local":
        return True
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in _LOOPBACK


@contextlib.contextmanager
def using_ray(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Send fan-out work to Ray while the block runs.

    `address` is a cluster's address (``host:port`` or ``ray://host:port``), "auto" (the
    cluster `ray start` left on this machine, or ``$RAY_ADDRESS``), or None for a private
    instance on this machine with `num_cpus` CPUs (default: all), bound to 127.0.0.1. A Ray
    already initialised in this process is used as it is and left running.
    """
    global _active
    if _loopback(address):
        # Ray otherwise advertises (and listens on) the machine's routable address, even for a
        # private instance; with this it keeps to the loopback interface. Read at import time.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address in (None, "local"):
            kwargs["num_cpus"] = num_cpus
        try:
            ray.init(address="local" if address in (None, "local") else address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or "a new local instance"
            raise RankloopError(f"cannot connect to Ray at {where}: {e}") from e
    resources = ray.cluster_resources()
    print(
        f"ray: {len(ray.nodes())} node(s), {int(resources.get('CPU', 0))} CPUs"
        + (f" at {address}" if address not in (None, "local") else " (local instance)"),
        file=sys.stderr,
    )
    previous, _active = _active, True
    try:
        yield
    finally:
        _active = previous
        if started:
            ray.shutdown()


def ray_active() -> bool:
    """Whether a `using_ray` block is open in this process (fan-out work goes to Ray)."""
    return _active


def cluster_cpus() -> int:
    """CPUs of the Ray cluster in use (at least 1)."""
    ray = _import_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def map_tasks(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    desc: str = "tasks",
    progress: bool = False,
    num_cpus: float = 1,
) -> Iterator[R]:
    """`fn(x)` for each of `items`, yielded in the order of `items` as each is ready; as Ray
    tasks of `num_cpus` CPUs each when Ray is active (all submitted at once), else one by one
    here.

    `fn` and what it refers to are shipped to the workers (cloudpickle), so it must not rely
    on state outside its arguments and closure. An exception in a task is raised here; the
    tasks already submitted still run to their end.
    """
    bar = tqdm(total=len(items), desc=desc + (" (ray)" if _active else ""), disable=not progress)
    with bar:
        if not _active:
            for x in items:
                yield fn(x)
                bar.update(1)
            return
        ray = _import_ray()

        def call(x: T) -> R:  # a plain function: Ray takes no partials or callable objects
            return fn(x)

        remote = ray.remote(num_cpus=num_cpus, max_retries=0)(call)
        # No ray.cancel on an error: cancelling a task that has just ended aborts the driver
        # in Ray 2.60 ("Tried to complete task that was not pending"); the other tasks run to
        # their end and their results are dropped.
        for ref in [remote.remote(x) for x in items]:
            result = ray.get(ref)
            bar.update(1)
            yield result


def add_ray_argument(parser: Any) -> None:
    """`--ray [ADDRESS]` on a command: `rankloop.cli.main` runs it inside `using_ray`."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="fan work out over Ray (the scale extra): a cluster's ADDRESS (host:port, or "
        "'auto' for the one `ray start` left on this machine), or none for a private local "
        "instance on 127.0.0.1",
    )
