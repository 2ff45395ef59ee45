"""The method registry: every adapter by name, as plain imports.

``ADAPTERS[name](dim, **options)`` builds one; :func:`build_adapter` does the
same with errors that list what is accepted. The names are the ``method``
values of the profiles (``osgha_lite/profiles/*.json``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from osgha_lite.methods.apse_ipik import APSEIPIKAdapter
from osgha_lite.methods.base import RetrievalAdapter
from osgha_lite.methods.baselines import BottleneckAdapter, IdentityAdapter, LinearHead
from osgha_lite.methods.entityclip import EntityCLIPAdapter
from osgha_lite.methods.hgan import HGANAdapter
from osgha_lite.methods.hypergraph import HypergraphAdapter

#: Adapter builders by name: ``ADAPTERS[name](dim, **options)``.
ADAPTERS: dict[str, Callable[..., RetrievalAdapter]] = {
    "identity": IdentityAdapter,
    "linear": LinearHead,
    "bottleneck": BottleneckAdapter,
    "hypergraph": HypergraphAdapter,
    "entityclip": EntityCLIPAdapter,
    "apse-ipik": APSEIPIKAdapter,
    "hgan": HGANAdapter,
}


def build_adapter(name: str, dim: int, **options: Any) -> RetrievalAdapter:
    """Build the adapter registered as ``name`` for ``dim``-dimensional features.

    ``options`` go to the adapter's constructor (see each class). Unknown
    names or options raise a ``ValueError`` that lists what is accepted.
    """
    if name not in ADAPTERS:
        raise ValueError(f"build_adapter: unknown adapter {name!r}; known: {sorted(ADAPTERS)}")
    try:
        return ADAPTERS[name](dim, **options)
    except TypeError as error:
        raise ValueError(f"build_adapter({name!r}): bad options {sorted(options)}: {error}") from error
