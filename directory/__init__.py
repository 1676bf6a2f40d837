"""Organisations, departments, people and roles; sign-in; TSV import/export (directory issue)."""
