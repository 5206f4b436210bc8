"""Fixtures that provide a real int8 TFLite model."""
