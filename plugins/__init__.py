"""Framework adapters: each translates one framework's events into spanguard's span tree.

Import the one you need (``spanguard.plugins.langchain``); importing this package
imports no framework.
"""

__all__: list[str] = []
