"""Fixtures that start a real Mosquitto broker on a free loopback port."""
