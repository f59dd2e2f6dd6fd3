from tests.unit.cluster.fixture_server import fixture_server

__all__ = ["fixture_server"]
