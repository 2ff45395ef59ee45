"""The methods: the adapter interface, the baselines, the paper's hypergraph adapter and the related methods.

Every method here is an adapter on a frozen image-text embedding space,
behind one interface, so one training loop (:mod:`osgha_lite.train.fit`)
and one evaluation (:mod:`osgha_lite.metrics`) handle all of them. They
depend only on :mod:`osgha_lite.losses`, :mod:`osgha_lite.atomic` and
:mod:`osgha_lite.runtime` (torch, NumPy and SciPy: the core install).

Reading order
-------------
1. :mod:`~osgha_lite.methods.base` - the interface (:class:`RetrievalAdapter`,
   :class:`AdapterContext`) and the helpers every method shares.
2. :mod:`~osgha_lite.methods.baselines` - the frozen backbone, a linear head,
   CLIP-Adapter, and the residual :class:`~osgha_lite.methods.baselines.Expert`.
3. :mod:`~osgha_lite.methods.hypergraph` - **the paper's method**, OS-HGAdapter's
   hypergraph adapter (its own reading order is in its ``__init__``).
4. The related methods, each with what is the paper's and what is ours in its
   docstring: :mod:`~osgha_lite.methods.entityclip`,
   :mod:`~osgha_lite.methods.apse_ipik`, :mod:`~osgha_lite.methods.hgan`.
5. :mod:`~osgha_lite.methods.dropout` - the dropout that draws the same masks on
   every CPU.
6. :mod:`~osgha_lite.methods.registry` - every method by name
   (:func:`build_adapter`), as plain imports.
"""

from osgha_lite.methods.base import MODALITIES, AdapterContext, RetrievalAdapter, check_input, encode_batched, gather_rows
from osgha_lite.methods.baselines import BottleneckAdapter, Expert, IdentityAdapter, LinearHead, bottleneck_mlp
from osgha_lite.methods.registry import ADAPTERS, build_adapter

__all__ = [
    "ADAPTERS",
    "MODALITIES",
    "AdapterContext",
    "BottleneckAdapter",
    "Expert",
    "IdentityAdapter",
    "LinearHead",
    "RetrievalAdapter",
    "bottleneck_mlp",
    "build_adapter",
    "check_input",
    "encode_batched",
    "gather_rows",
]
