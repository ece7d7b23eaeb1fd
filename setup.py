"""Installs the Centaure packages, the twistd plugins and the ``centaure`` command.

Metadata lives in pyproject.toml; this file adds the ``twisted/plugins`` drop-in
files, which are not a package (Twisted's plugin folder must have no
``__init__.py``).
"""

import glob

from setuptools import setup

setup(
    data_files=[("twisted/plugins", sorted(glob.glob("twisted/plugins/*.py")))],
)
