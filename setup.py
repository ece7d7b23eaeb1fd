"""Installs the Centaure packages, the twistd plugins and the ``centaure`` command.

Metadata lives in pyproject.toml. Every package sits under ``src/``, so an
editable install puts ``src/`` itself on ``sys.path``: twistd then finds the
plugins of ``src/twisted/plugins`` as it finds those of any other folder on the
path. That folder must have no ``__init__.py`` of ours (Twisted owns the
``twisted.plugins`` package), so it is listed by hand rather than found.
"""

from setuptools import find_packages, setup

setup(
    package_dir={"": "src"},
    packages=find_packages(where="src", include=[
        "centaure", "centaure.*", "connector", "connector.*", "connector_*", "connector_*.*",
        "centaure_shared", "centaure_shared.*", "snmpwire", "snmpwire.*"])
    + ["twisted.plugins"],
)
