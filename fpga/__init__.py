"""FPGA build flows (Yosys / nextpnr through the YoWASP wheels)."""
