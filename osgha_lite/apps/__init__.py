"""What a user runs on their own data: evaluation on another dataset, and search.

Reading order
-------------
1. :mod:`~osgha_lite.apps.evaluate` - a profile's trained methods on another
   dataset (``python -m osgha_lite evaluate``).
2. :mod:`~osgha_lite.apps.search` - a folder of images by text, captions by
   image, in any method's space (``python -m osgha_lite search``).
3. :mod:`~osgha_lite.apps.search_widget` - a notebook front end to the search.
4. :mod:`~osgha_lite.apps.cli` - what the commands share: every error as one line.
"""
