"""Runtimes: one module per framework, each imported lazily. See :mod:`pitstop.runtimes.base`."""
