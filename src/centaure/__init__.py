"""The app, on top of the connectors: the ``centaure`` command, ``centaure init``,
the demo with its simulated fleet, and ``twistd centaure-all`` (every installed
connector in one process). Nothing below imports it.
"""
