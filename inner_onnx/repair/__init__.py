"""Repair (DESIGN.md steps 4-5): problem, methods, trainer, write-back and verification."""
