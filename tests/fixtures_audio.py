"""Fixtures that generate test audio: tones, noise, espeak-ng speech."""
