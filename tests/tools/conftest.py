"""The tool tests' session fixture; the models and helpers live in tool_models.py (importable by name)."""

from tool_models import exported  # noqa: F401  (a session-scoped fixture)
