"""``forge container`` and ``forge image``: Typer apps found through ``forge.cli`` entry points.

Only typer is imported at module level; the runtime loads when a command runs.
"""
