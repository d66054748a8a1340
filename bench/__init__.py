"""convbench: the harness, CLI, data, metrics and report. Imports no framework."""
__version__ = "0.1.0"
SCHEMA_VERSION = 1
