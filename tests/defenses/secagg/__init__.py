"""Tests of fedbench.defenses.secagg (a package so that test_channel.py may share its name)."""
