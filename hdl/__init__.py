"""The accelerator's RTL in Amaranth HDL 0.5 (one component per module)."""
