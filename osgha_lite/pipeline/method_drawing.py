r"""The method, drawn: a toy hypergraph of images, captions and descriptions, and one convolution step.

The figure is made by the package's own code (:func:`semantic_hyperedges`,
:func:`knn_hyperedges`, :func:`hypergraph_conv`) on a seeded toy input of
three images, their captions and two LLM descriptions per caption, so what it
shows is what the adapter computes, at a size a reader can follow:

1. the nodes and the hyperedges that join them: a *semantic* hyperedge joins
   a caption and its descriptions; a *similarity* (kNN) hyperedge joins an
   image or caption and its nearest nodes, across both modalities;
2. the incidence matrix :math:`H` (nodes by hyperedges);
3. one step of the adapter, in a reduced dimension and back:

   .. math::

       Z = X P_\downarrow,\quad
       Z' = D_v^{-1/2} H W D_e^{-1} H^\top D_v^{-1/2} Z,\quad
       X' = \operatorname{normalize}\big(\alpha\, Z' P_\uparrow + (1 - \alpha) X\big),

   with :math:`P_\downarrow` the top principal directions of :math:`X` and
   :math:`P_\uparrow = P_\downarrow^\top`, as the adapter initialises them.

Notebook 03 draws it (``figures/<profile>/03_method.png``). The toy sizes (8 dimensions reduced to 2, :math:`k = 2`, :math:`\alpha = 0.5`)
are ours, chosen to be drawn; the lite profile's settings are in its JSON.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from osgha_lite.methods.hypergraph import combine_hypergraphs, hypergraph_conv, knn_hyperedges, semantic_hyperedges

KINDS = {"semantic": "#1b9e77", "similarity": "#d95f02"}
METHOD_CAPTION = (
    "The hypergraph adapter on a toy input of three images, their captions and two LLM descriptions per caption. "
    "Top: each hyperedge (a diamond) joins several nodes at once; green ones join a caption and its descriptions, "
    "orange ones join an image or caption and its two nearest nodes of either modality. Middle: the same "
    "hyperedges as the incidence matrix H. Bottom: one step of the adapter on every node's vector, reduced to two "
    "dimensions, convolved over H, restored to eight and mixed with the input; look at how the convolved rows of a "
    "caption and its descriptions become alike.")


def toy_hypergraph(seed: int = 0, dim: int = 8, descriptions: int = 2, k: int = 2) -> dict:
    """The toy nodes, their features and the hypergraph the package builds over them."""
    generator = torch.Generator().manual_seed(seed)
    n_images = 3
    centres = F.normalize(torch.randn(n_images, dim, generator=generator), dim=-1)
    labels, kinds, groups, rows = [], [], [], []
    for i in range(n_images):
        labels.append(f"image {i + 1}"), kinds.append("image"), groups.append(i)
        rows.append(centres[i] + 0.2 * torch.randn(dim, generator=generator))
    captions = []
    for i in range(n_images):
        captions.append(len(labels))
        labels.append(f"caption {i + 1}"), kinds.append("caption"), groups.append(i)
        rows.append(rows[i] + 0.3 * torch.randn(dim, generator=generator))
    described = []
    for i in range(n_images):
        own = []
        for j in range(descriptions):
            own.append(len(labels))
            labels.append(f"desc. {i + 1}.{j + 1}"), kinds.append("description"), groups.append(i)
            rows.append(rows[captions[i]] + 0.15 * torch.randn(dim, generator=generator))
        described.append(own)
    X = F.normalize(torch.stack(rows), dim=-1)
    n = X.shape[0]
    semantic = semantic_hyperedges(captions, described, n)
    anchors = torch.tensor([i for i, kind in enumerate(kinds) if kind != "description"])
    similarity = knn_hyperedges(X, k, query_node_ids=anchors)
    graph = combine_hypergraphs(semantic, similarity)
    edge_kinds = ["semantic"] * semantic.n_edges + ["similarity"] * similarity.n_edges
    return {"X": X, "labels": labels, "kinds": kinds, "graph": graph, "edge_kinds": edge_kinds}


def convolution_step(X: torch.Tensor, graph, reduced_dim: int = 2, alpha: float = 0.5) -> dict:
    """Reduce, convolve, restore and mix, as :class:`HypergraphAdapter` does for one layer."""
    centred = X - X.mean(dim=0, keepdim=True)
    down = torch.linalg.svd(centred, full_matrices=False).Vh[:reduced_dim].T  # [dim, r]
    Z = X @ down
    H = graph.incidence(X.dtype)
    Z_conv = hypergraph_conv(Z, H, graph.edge_weights)
    message = Z_conv @ down.T
    out = F.normalize(alpha * message + (1 - alpha) * X, dim=-1)
    return {"X": X, "Z": Z, "Z_conv": Z_conv, "message": message, "out": out, "alpha": alpha}


def draw_method_figure(seed: int = 0):
    """The three-part figure: hyperedges over the toy nodes, the incidence matrix, one convolution step."""
    import matplotlib.pyplot as plt

    toy = toy_hypergraph(seed)
    step = convolution_step(toy["X"], toy["graph"])
    X = toy["X"].numpy()
    centred = X - X.mean(axis=0)
    xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    H = toy["graph"].dense_incidence().numpy()

    fig = plt.figure(figsize=(9, 13), layout="constrained")
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=[1.15, 0.9, 0.75])
    ax = top.subplots()
    markers = {"image": ("s", "#4c72b0"), "caption": ("o", "#c44e52"), "description": ("^", "#8172b2")}
    for e, kind in enumerate(toy["edge_kinds"]):  # a hyperedge as a diamond joined to each of its nodes
        members = xy[H[:, e] > 0]
        hub = members.mean(axis=0)
        for point in members:
            ax.plot([hub[0], point[0]], [hub[1], point[1]], color=KINDS[kind], linewidth=2, alpha=0.7, zorder=1)
        ax.scatter(*hub, marker="D", s=60, color=KINDS[kind], zorder=2)
    for kind, (marker, colour) in markers.items():
        idx = [i for i, k in enumerate(toy["kinds"]) if k == kind]
        ax.scatter(xy[idx, 0], xy[idx, 1], marker=marker, s=110, color=colour, label=kind, zorder=3)
    for i, label in enumerate(toy["labels"]):
        ax.annotate(label, xy[i], textcoords="offset points", xytext=(7, 5), fontsize=10)
    from matplotlib.patches import Patch

    handles = ax.get_legend_handles_labels()[0] + [
        Patch(color=KINDS["semantic"], label="semantic hyperedge: a caption and its descriptions"),
        Patch(color=KINDS["similarity"], label="similarity hyperedge: an image or caption and its 2 nearest nodes, either modality")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, -0.04), ncol=2, fontsize=9, frameon=False)
    ax.set_title("1 · Nodes and hyperedges (first two principal directions of the features)", loc="left")
    ax.set_xticks([]), ax.set_yticks([])

    ax = middle.subplots()
    ax.imshow(H, cmap="Greys", vmin=0, vmax=1.6, aspect="auto")
    ax.set_yticks(range(len(toy["labels"])), toy["labels"], fontsize=9)
    ax.set_xticks(range(H.shape[1]), [f"{'sem' if k == 'semantic' else 'sim'} {e + 1}"
                                      for e, k in enumerate(toy["edge_kinds"])], rotation=90, fontsize=9)
    for e, kind in enumerate(toy["edge_kinds"]):
        ax.get_xticklabels()[e].set_color(KINDS[kind])
    ax.set_title("2 · Incidence matrix H: a node (row) belongs to a hyperedge (column)", loc="left")

    axes = bottom.subplots(1, 5, width_ratios=[8, 2, 2, 8, 8])
    panels = [("X (8 dims)", step["X"]), ("reduce\nZ = X P↓", step["Z"]), ("convolve\nHGNN(Z)", step["Z_conv"]),
              ("restore\nHGNN(Z) P↑", step["message"]), (f"residual\nα = {step['alpha']}, normalised", step["out"])]
    scale = float(max(abs(v).max() for _, v in panels))
    for ax, (title, value) in zip(axes, panels):
        ax.imshow(value.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_yticks(range(len(toy["labels"])), toy["labels"], fontsize=8)
    bottom.suptitle("3 · One adapter step, every node's vector as a row: reduce → convolve → restore → residual",
                    x=0.02, ha="left", fontsize=12)
    return fig
