"""The metrics: how a retrieval is scored, with intervals, and where the numbers are written.

Pure functions on score matrices and embeddings (NumPy and SciPy; no
training, no data loading), so they are part of the core install.

Reading order
-------------
1. :mod:`~osgha_lite.metrics.retrieval` - Recall@K, rSum, median and mean rank
   from a similarity matrix and an explicit caption-to-image index.
2. :mod:`~osgha_lite.metrics.bootstrap` - percentile-bootstrap intervals of
   those metrics over queries.
3. :mod:`~osgha_lite.metrics.gallery` - the same Recall@K over galleries too
   large for one score matrix, in blocks.
4. :mod:`~osgha_lite.metrics.protocols` - a profile's evaluation protocols
   (1K/5K folds for COCO) on top of the three above.
5. :mod:`~osgha_lite.metrics.entropy` - the entropy measures of notebook 02
   (all of them this project's choice; the paper gives no formula).
6. :mod:`~osgha_lite.metrics.entropy_report` - those measures applied to one
   split with their intervals: the rows of notebook 02's table, its result
   record and its verdicts.
7. :mod:`~osgha_lite.metrics.results` - one JSON result file per evaluation;
   tables are built from the files.
"""
