"""Helpers shared by the tests/test_server_*.py modules."""
