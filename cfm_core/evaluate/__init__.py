"""Evaluation: the ``evaluate`` command (PSNR/SSIM/SWD of models vs bicubic on held-out images) and its metrics.
Imports the engine and :mod:`cfm_core.train.degrade`; the nodes never import it.
"""
