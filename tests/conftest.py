"""Shared fixtures live in plugin modules, one per concern, so each can be owned separately."""

pytest_plugins = ["tests.fixtures_audio", "tests.fixtures_broker", "tests.fixtures_model"]
