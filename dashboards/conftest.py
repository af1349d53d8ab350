"""pytest's root for dashboards/tests: pytest puts the directory of this file
on the import path, so the tests import `build` and `check` as the modules
they are (no sys.path edits in the tests)."""
