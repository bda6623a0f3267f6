"""Where a bad behaviour lives (DESIGN.md steps 1-3): probes, layer selection, routing, faults."""
