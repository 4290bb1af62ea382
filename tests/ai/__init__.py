"""Tests of tether.ai."""
