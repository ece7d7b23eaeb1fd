"""Where the files shipped inside the ``connector`` package live.

The example configuration (``settings.ini``, inventory, credentials, rules,
routes, trap definitions, an example MIB) is package data, so that a wheel
carries it: ``centaure init`` copies it into a folder of the user's.
"""

from __future__ import annotations

import os

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

#: The example configuration files, as ``centaure init`` writes them.
EXAMPLES_DIR = os.path.join(_DATA_DIR, "examples")


def example_path(name: str) -> str:
    """The path of the shipped example file (or folder) ``name``."""
    return os.path.join(EXAMPLES_DIR, name)
