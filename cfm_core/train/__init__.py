"""Training: the ``train`` and ``export`` commands, the data pipeline (pairs, latent cache), seeded degradations of the
low-res input, and the EMA of the weights. Imports the engine only; ``evaluate`` uses :mod:`.degrade` (it measures a
model on inputs degraded as in training). The nodes never import it.
"""
