"""The modules twistd's ``ServiceMaker`` entries point at (one per plugin)."""
