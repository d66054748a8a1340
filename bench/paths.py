"""The repository root, named once for every module that needs a path inside the checkout.

Imports nothing but os: the CNTK worker imports bench code under CPython 3.6.
"""
import os

#: the checkout's root: the directory holding bench/, backends/, models/ and tox.ini
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
