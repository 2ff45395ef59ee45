"""The harness that regenerates and checks every artifact: notebooks, figures, manifest, environment.

Reading order
-------------
1. :mod:`~osgha_lite.pipeline.runner` - runs the numbered notebooks with
   Papermill (``python -m osgha_lite run``).
2. :mod:`~osgha_lite.pipeline.figures` - figures and tables saved
   reproducibly and recorded in the manifest.
3. :mod:`~osgha_lite.pipeline.manifest` - every artifact, where it came from,
   and the checks against it (``python -m osgha_lite manifest check``).
4. :mod:`~osgha_lite.pipeline.envcheck` - OK/FAIL for every dependency, model
   file and data folder (``python -m osgha_lite envcheck``).
5. :mod:`~osgha_lite.pipeline.fingerprint` - digests of every computing stage
   against the reference machine (``python -m osgha_lite envcheck --fingerprint``).
6. :mod:`~osgha_lite.pipeline.report` - notebook 05's tables, built from the
   result files alone.
7. :mod:`~osgha_lite.pipeline.plots` - the drawing functions of the figures of
   notebooks 05 and 06.
8. :mod:`~osgha_lite.pipeline.fair_test` - notebook 06's steps: the protocol
   table, the LLM quality ladder and the paired differences.
9. :mod:`~osgha_lite.pipeline.method_drawing` - the method, drawn: a toy
   hypergraph and one adapter step, made by the package's own code.
"""
