"""Course exercises cut from osgha_lite: source notebooks for Otter-Grader and their build (see docs/teaching.md)."""
