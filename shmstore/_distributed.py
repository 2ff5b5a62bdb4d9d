"""A Dask ``distributed`` worker plugin that prepares each host's shared-memory tier.

Register it once, from the client::

    client.register_plugin(shmstore.HostTierPlugin(capacity="8 GiB", sources=[url]))

Every worker then, at start: takes its host's root (``root=``, else its own
``$SHMSTORE_ROOT``, else ``/dev/shm``) and exports it as ``$SHMSTORE_ROOT``,
so stores, caches and filesystems unpickled in its tasks (which carry names
only) open that host's shared memory; reclaims what crashed processes left in
that root (``shmstore gc``, which never touches a live process's entries); and
opens the host cache of each of *sources* with *capacity* and *expiry*, so
those settings are recorded for every process of the host.
:meth:`HostTierPlugin.report` gathers each host's cache counters back to the
client. ``distributed`` is imported only by this module, which
``import shmstore`` does not load. See docs/multihost.md.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import WorkerPlugin

from shmstore import _inventory as inventory
from shmstore._names import ENV_ROOT, resolve_root

if TYPE_CHECKING:
    from collections.abc import Iterable

    from distributed import Client, Worker

__all__ = ["HostTierPlugin", "host_tier_report"]

logger = logging.getLogger(__name__)


class HostTierPlugin(WorkerPlugin):
    """Prepare each worker's host tier: its root, leftovers reclaimed, caches set up.

    Parameters
    ----------
    root
        The shared-memory root of every worker (must exist there). ``None``
        (default): each worker's own ``$SHMSTORE_ROOT``, else ``/dev/shm``, so
        hosts may differ.
    capacity
        Capacity of the host cache of each of *sources* (``"8 GiB"``),
        recorded in its namespace on each host.
    expiry
        Expiry (seconds) of those caches; see :class:`~shmstore.CachingStore`.
    sources
        Source URLs (``s3://bucket/data.zarr``, ``http://...``) whose
        ``shmcache::`` caches to open with *capacity* and *expiry* on each host.
    storage_options
        Options of the sources' filesystems, by protocol, as fsspec takes
        them (``{"s3": {"endpoint_url": ...}}``).
    gc
        Reclaim the leftovers of dead processes in the root at start.

    Examples
    --------
    >>> import shmstore
    >>> plugin = shmstore.HostTierPlugin(capacity="1 GiB")  # doctest: +SKIP
    >>> client.register_plugin(plugin)  # doctest: +SKIP
    >>> shmstore.HostTierPlugin.report(client)  # doctest: +SKIP
    {'node-1:/dev/shm': {'cache-0f3c...': {'hits': 480, 'misses': 24, ...}}, ...}
    """

    name = "shmstore-host-tier"

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] | None = None,
        capacity: int | str | None = None,
        expiry: float | None = None,
        sources: Iterable[str] = (),
        storage_options: dict[str, Any] | None = None,
        gc: bool = True,
    ) -> None:
        self.root = None if root is None else os.fspath(root)
        self.capacity = capacity
        self.expiry = expiry
        self.sources = list(sources)
        self.storage_options = dict(storage_options or {})
        self.gc = gc
        #: What setup did on this worker (root, reclaimed, caches): for logs and tests.
        self.prepared: dict[str, Any] = {}

    def setup(self, worker: Worker) -> None:
        # docstring inherited
        root = resolve_root(self.root)  # FileNotFoundError names it if it is missing
        os.environ[ENV_ROOT] = root
        reclaimed = []
        if self.gc:
            for leftover in inventory.scan_root(root, usage=False).leftovers:
                try:
                    if inventory.reclaim(leftover):
                        reclaimed.append(leftover.path)
                except OSError as e:  # another worker of the host got there first
                    logger.debug("could not reclaim %s: %s", leftover.path, e)
        caches = [self._open_cache(url) for url in self.sources]
        self.prepared = {"root": root, "reclaimed": reclaimed, "caches": caches}
        logger.info("shmstore host tier ready in %s: %s", root, self.prepared)

    def _open_cache(self, url: str) -> str:
        # Imported here: the cache layer pulls in zarr and fsspec, which a plugin
        # registered without sources never needs.
        from shmstore._cachefs import SharedMemoryCacheFileSystem

        protocol = url.split("://", 1)[0] if "://" in url else "file"
        fs = SharedMemoryCacheFileSystem(
            url,
            target_protocol=protocol,
            target_options=self.storage_options.get(protocol, {}),
            capacity=self.capacity,
            expiry=self.expiry,
        )
        fs.host_cache  # noqa: B018 (opens the namespace: records capacity and expiry)
        return fs.namespace

    @staticmethod
    def report(client: Client) -> dict[str, dict[str, Any]]:
        """Each host's cache counters, gathered from its workers.

        Returns
        -------
        dict
            ``{"<hostname>:<root>": {namespace: counters}}``, one entry per host
            (workers that share a root report it once). Counters are those of
            :meth:`shmstore.CachingStore.stats` (``hits``, ``misses``,
            ``bytes_fetched``, ...) plus ``cached_bytes`` and ``capacity``.
        """
        return host_tier_report(client)


def flush_worker_counters() -> None:
    """On a worker: add its pending cache hits to its host's counters."""
    # Only if loaded: a worker that never opened a cache has nothing to flush.
    cache = sys.modules.get("shmstore._cache")
    if cache is not None:
        cache.flush_all_counters()


def worker_cache_stats() -> tuple[str, dict[str, Any]]:
    """On a worker: ``("<hostname>:<root>", {namespace: counters})`` of its root's caches."""
    root = resolve_root(None)
    out: dict[str, Any] = {}
    for entry in inventory.scan_root(root, leftovers=False).namespaces:
        if entry.cache_source is None:
            continue
        stats = dict(entry.cache_stats or {})
        stats.update(source=entry.cache_source, cached_bytes=entry.nbytes, capacity=entry.capacity)
        out[entry.name] = stats
    return f"{socket.gethostname()}:{root}", out


def host_tier_report(client: Client) -> dict[str, dict[str, Any]]:
    """Each host's cache counters (see :meth:`HostTierPlugin.report`)."""
    client.run(flush_worker_counters)  # first every worker's pending hits, then read
    report: dict[str, dict[str, Any]] = {}
    for host, stats in client.run(worker_cache_stats).values():
        report[host] = stats  # workers sharing a root read the same counters
    return report
