"""The method figure: a toy hypergraph built by the package's own code, and one adapter step."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from osgha_lite.pipeline.figures import check_caption
from osgha_lite.pipeline.method_drawing import METHOD_CAPTION, convolution_step, draw_method_figure, toy_hypergraph


def test_the_toy_hypergraph_has_a_semantic_hyperedge_per_caption_and_similarity_hyperedges_across_modalities():
    toy = toy_hypergraph(seed=0)
    H = toy["graph"].dense_incidence()
    assert H.shape == (12, 9) and toy["X"].shape == (12, 8)
    labels = toy["labels"]
    for e, kind in enumerate(toy["edge_kinds"]):
        members = [labels[i] for i in H[:, e].nonzero().flatten().tolist()]
        if kind == "semantic":  # a caption and its own two descriptions
            number = members[0].split()[-1]
            assert members == [f"caption {number}", f"desc. {number}.1", f"desc. {number}.2"]
        else:  # an image or caption and its 2 nearest nodes
            assert len(members) == 3 and any(m.startswith(("image", "caption")) for m in members)
    assert toy["edge_kinds"].count("semantic") == 3


def test_one_step_is_reduce_convolve_restore_residual_as_written():
    toy = toy_hypergraph(seed=0)
    step = convolution_step(toy["X"], toy["graph"], reduced_dim=2, alpha=0.5)
    X, H, w = toy["X"].double(), toy["graph"].dense_incidence().double(), toy["graph"].edge_weights.double()
    dv, de = (H * w).sum(1), H.sum(0)
    G = torch.diag(dv.rsqrt()) @ H @ torch.diag(w / de) @ H.T @ torch.diag(dv.rsqrt())  # HGNN's operator
    down = torch.linalg.svd(X - X.mean(0), full_matrices=False).Vh[:2].T
    expected = F.normalize(0.5 * (G @ X @ down) @ down.T + 0.5 * X, dim=-1)
    assert torch.allclose(step["out"].double(), expected, atol=1e-5)
    assert step["Z"].shape == (12, 2) and step["message"].shape == (12, 8)


def test_the_figure_draws_and_its_caption_reads_as_one():
    fig = draw_method_figure(seed=0)
    assert len(fig.subfigs) == 3
    plt.close(fig)
    assert check_caption(METHOD_CAPTION, "03_method") == METHOD_CAPTION
