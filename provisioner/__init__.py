"""provision: declarative hosts, VMs and containers over SSH."""

__version__ = "0.1.0"
