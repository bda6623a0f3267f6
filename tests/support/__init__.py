"""Helpers the tests share: small models, data files and the in-process CLI."""
