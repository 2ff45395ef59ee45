"""Training and running the methods on cached features: the loop, its checkpoints, one experiment.

Reading order
-------------
1. :mod:`~osgha_lite.train.fit` - one training loop for every trainable model
   on cached features, early stopping on the dev split.
2. :mod:`~osgha_lite.train.checkpoint` - checkpoint files that cannot run code,
   verified by a SHA-256 written inside them.
3. :mod:`~osgha_lite.train.experiment` - one method of a profile: inputs,
   training, evaluation and the result file (what notebooks 03-07 call).
4. :mod:`~osgha_lite.train.timings` - the wall-clock log, kept out of the
   committed results.
"""
