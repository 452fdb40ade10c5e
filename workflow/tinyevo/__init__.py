"""tinyevo: zero-cost NAS to on-device learning C++ for microcontrollers."""
__version__ = "0.1.0"
