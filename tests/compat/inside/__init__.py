"""Checks that run inside a compat virtual environment (see ``tests/compat/venvs.py``).

Their file names do not start with ``test_``: the main suite, whose environment has
other pins, never collects them; ``tests/compat/test_*.py`` runs each in its own.
"""
