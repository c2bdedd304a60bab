"""Loads the conformance plugin (harness/pytest_craft/plugin.py) for the
markdown scenarios in this directory."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "harness"))

from pytest_craft.plugin import *  # noqa: E402,F401,F403
