"""The command line: ``python -m cfm_core`` / ``cfm-boost`` (:mod:`.main` dispatches each command to its module),
``upscale``, ``info`` and ``convert-official``. The top layer: it may import every part of ``cfm_core`` (``train``,
``evaluate`` and ``bench`` bring their own commands); nothing in ``cfm_core`` or ``nodes`` imports it.
"""
