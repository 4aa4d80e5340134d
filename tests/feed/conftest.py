"""Feed fixtures: logging back at its defaults for every test (see tests/publish)."""

from tests.publish.conftest import default_logging

__all__ = ["default_logging"]
