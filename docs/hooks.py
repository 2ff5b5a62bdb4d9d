"""mkdocs hooks: link the API reference to other projects' documentation without network.

mkdocstrings can fetch each project's ``objects.inv`` at build time, but the
build must work offline, and under ``--strict`` a failed fetch fails the build.
So the inventories live in ``docs/inventories/`` (written by
``make_inventories.py`` there, or replaced by a project's real file), and this
hook registers every object they list with mkdocs-autorefs, which then links
``numpy.ndarray``, ``zarr.abc.store.Store``, ``FileNotFoundError``... in
signatures and docstrings. An object not listed is shown as plain text.
"""

from __future__ import annotations

import builtins
import re
from pathlib import Path
from typing import Any

from mkdocstrings import Inventory

INVENTORIES = Path(__file__).resolve().parent / "inventories"
BASE_URLS = {
    "python.inv": "https://docs.python.org/3/",
    "numpy.inv": "https://numpy.org/doc/stable/",
    "dask.inv": "https://docs.dask.org/en/stable/",
    "zarr.inv": "https://zarr.readthedocs.io/en/stable/",
    "fsspec.inv": "https://filesystem-spec.readthedocs.io/en/latest/",
}


def on_env(env: Any, config: Any, files: Any) -> None:
    autorefs = config.plugins["autorefs"]
    for name, base in BASE_URLS.items():
        with open(INVENTORIES / name, "rb") as f:
            for item in Inventory.parse_sphinx(f, domain_filter=("py",)).values():
                autorefs.register_url(item.name, base + item.uri)


# The docstrings name objects with Sphinx roles (:func:`attach`), which
# mkdocstrings leaves as text: ":func:" and then the name in code. Turn each
# into a cross-reference (plain code where nothing matches), short names being
# shmstore's own.
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|exc|mod|obj):<code>~?\.?([^<]+)</code>")
FOREIGN = (
    "numpy",
    "np",
    "zarr",
    "dask",
    "fsspec",
    "os",
    "multiprocessing",
    "threading",
    "typing",
    "collections",
    "mmap",
    "fcntl",
    "pickle",
    "contextlib",
    "shmstore",
)


def _autoref(m: re.Match[str]) -> str:
    name = m[1].removesuffix("()")
    ident = name if name.split(".")[0] in FOREIGN or name in BUILTINS else f"shmstore.{name}"
    return f'<autoref identifier="{ident}" optional><code>{m[1]}</code></autoref>'


BUILTINS = frozenset(dir(builtins))


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return ROLE.sub(_autoref, html)
