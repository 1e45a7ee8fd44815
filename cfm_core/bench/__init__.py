"""Benchmarks: the ``bench`` command (:mod:`.bench`), its sections (one module each, carrying its own plotter; the
table is :mod:`.sections`), shared types (:mod:`.common`), timing (:mod:`.timing`), stand-in models (:mod:`.models`),
the report (:mod:`.report`) and plots (:mod:`.plots`). Imports the engine only; the nodes never import it.
"""
