"""Verification: golden-model tests, Amaranth-simulator tests and cocotb + Verilator benches."""
