"""The old command form ``python -m osgha_lite.search``: now ``python -m osgha_lite search`` (:mod:`osgha_lite.apps.search`).

Kept for now: it prints one line naming the new form, then runs it.
"""

if __name__ == "__main__":
    import sys

    from osgha_lite.__main__ import old_form

    sys.exit(old_form("search"))
