"""Converters from public preference datasets to the files data/loaders.py reads."""
