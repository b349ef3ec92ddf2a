"""Backends behind one contract: ``local`` (files, SQLite, worker pool) and later ``aws``.

Dependencies point into this package, never out of it to ``cli``: platform code may
import serving, pipeline and the rest; serving never imports platform (it accepts any
object with the small Protocols it defines, such as ``serving.PredictionSink``).
"""
