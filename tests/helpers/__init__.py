"""Helpers shared by the test suites: fixtures and utilities that more than one test module uses."""
