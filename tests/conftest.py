"""Shared by every test folder: pytest puts this folder on sys.path, so
``tests/optional_tools.py`` is importable from tests/model, tests/adapter, ..."""
