"""osgha-lite: a reproducible companion to OS-HGAdapter (arXiv 2510.13131).

The package holds the pieces the numbered notebooks import: dataset readers,
frozen backbones with a feature cache, retrieval metrics, losses, the
hypergraph adapter, LLM augmentation and entropy measures.
"""

__version__ = "0.1.0"
