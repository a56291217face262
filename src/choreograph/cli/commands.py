"""Imports every command module so that their commands register on the app."""
