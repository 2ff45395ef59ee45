"""The old command form ``python -m osgha_lite.evaluate``: now ``python -m osgha_lite evaluate`` (:mod:`osgha_lite.apps.evaluate`).

Kept for now: it prints one line naming the new form, then runs it.
"""

if __name__ == "__main__":
    import sys

    from osgha_lite.__main__ import old_form

    sys.exit(old_form("evaluate"))
