"""Converters from public instruction and preference datasets to this project's files (python -m public_data.convert / split)."""
