"""Paths inside the checkout, named once: the repository root and the record schema.

Imports nothing but os: the CNTK worker imports bench code under CPython 3.6.
"""
import os

#: the checkout's root: the directory holding bench/, backends/, models/ and tox.ini
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the documented record schema: bench/schema.py validates with it, bench/results.py reads its
#: required fields (here, so that neither module has to import the other for it)
SCHEMA_PATH = os.path.join(REPO, "bench", "record.schema.json")
