"""Centaure core: settings, bus client, publisher, subscriber, buffer, messages, status."""

__version__ = "0.1.0"
