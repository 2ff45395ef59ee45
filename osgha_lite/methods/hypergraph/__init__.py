"""Hypergraphs over images, captions and LLM descriptions, and the hypergraph adapter.

What the paper says and what is this project's reading
-------------------------------------------------------
OS-HGAdapter (arXiv 2510.13131) trains a hypergraph adapter on a frozen
image-text embedding space. The paper's code is not available; from its text
we take: nodes are images, captions and the captions' LLM descriptions;
hyperedges join several nodes at once, namely each caption with its own
descriptions (*semantic* hyperedges) and nodes with related nodes across
both modalities; the convolution is HGNN's (Feng et al. 2019), run in a
reduced dimension, restored to the original one and mixed with the input by
a residual ratio; the adapter is meant to correct positive and negative
matching errors. Everything that goes beyond that is our design and is
documented in the module where it is made.

Modules, in reading order
-------------------------
* :mod:`~osgha_lite.methods.hypergraph.structure` - the :class:`Hypergraph`
  incidence, pure hyperedge builders and :func:`hypergraph_conv` (HGNN).
* :mod:`~osgha_lite.methods.hypergraph.memory` - the :class:`MemoryBank` of
  training nodes and :func:`paired_rows`.
* :mod:`~osgha_lite.methods.hypergraph.links` - what each query needs from the
  bank (:class:`MemoryLinks`, :class:`NeighbourTable`), searched once.
* :mod:`~osgha_lite.methods.hypergraph.query` - the per-query ("ego") hypergraphs
  with semantic, kNN and pair hyperedges (:func:`build_query_hypergraph`).
* :mod:`~osgha_lite.methods.hypergraph.hubness` - the hubness correction
  (:func:`hubness_phase`).
* :mod:`~osgha_lite.methods.hypergraph.adapter` - :class:`HypergraphAdapter`, the
  module, and the inductive test-time protocol.

Every public name is importable from this package.
"""

from __future__ import annotations

from osgha_lite.methods.hypergraph.adapter import (
    DUPLICATE_SIMILARITY,
    HYPEREDGE_KINDS,
    INITS,
    TEST_MODES,
    HypergraphAdapter,
)
from osgha_lite.methods.hypergraph.hubness import HUBNESS_PHASE_SCALE, hubness_beta_squared, hubness_phase
from osgha_lite.methods.hypergraph.links import (
    MemoryLinks,
    NeighbourTable,
    hubness_cohesion,
    memory_links,
    memory_neighbours,
    neighbour_table,
)
from osgha_lite.methods.hypergraph.memory import IMAGE, MODALITY_CODES, TEXT, MemoryBank, paired_rows
from osgha_lite.methods.hypergraph.query import QueryHypergraph, build_query_hypergraph
from osgha_lite.methods.hypergraph.structure import (
    Hypergraph,
    combine_hypergraphs,
    edge_degrees,
    hypergraph_conv,
    hypergraph_conv_rows,
    hypergraph_from_edges,
    knn_hyperedges,
    nearest_neighbour_similarities,
    nearest_neighbours,
    semantic_hyperedges,
    vertex_degrees,
)

__all__ = [
    "DUPLICATE_SIMILARITY",
    "HUBNESS_PHASE_SCALE",
    "HYPEREDGE_KINDS",
    "IMAGE",
    "INITS",
    "MODALITY_CODES",
    "TEST_MODES",
    "TEXT",
    "Hypergraph",
    "HypergraphAdapter",
    "MemoryBank",
    "MemoryLinks",
    "NeighbourTable",
    "QueryHypergraph",
    "build_query_hypergraph",
    "combine_hypergraphs",
    "edge_degrees",
    "hubness_beta_squared",
    "hubness_cohesion",
    "hubness_phase",
    "hypergraph_conv",
    "hypergraph_conv_rows",
    "hypergraph_from_edges",
    "knn_hyperedges",
    "memory_links",
    "memory_neighbours",
    "nearest_neighbour_similarities",
    "neighbour_table",
    "nearest_neighbours",
    "paired_rows",
    "semantic_hyperedges",
    "vertex_degrees",
]
