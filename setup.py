"""Installs the Centaure packages, the twistd plugins and the ``centaure`` command.

Metadata lives in pyproject.toml. The twistd plugins are installed as the
``twisted.plugins`` namespace: Twisted's plugin folder must have no
``__init__.py`` of ours, so it is listed by hand rather than found.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["connector", "connector.*", "connector_*", "connector_*.*"])
    + ["twisted.plugins"],
)
