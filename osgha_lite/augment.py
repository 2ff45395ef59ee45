"""The old command form ``python -m osgha_lite.augment``: now ``python -m osgha_lite augment`` (:mod:`osgha_lite.llm.augment`).

Kept for now: it prints one line naming the new form, then runs it.
"""

if __name__ == "__main__":
    import sys

    from osgha_lite.__main__ import old_form

    sys.exit(old_form("augment"))
