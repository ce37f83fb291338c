"""The seams to the outside world, as plain Python: AWS, Docker, git, the CLI
and HTTP clients, one error catalogue, one way to start a process (process.py)
and the test-only hooks (testing.py, active only under SLIPWAY_TESTING). The
bottom layer: imports nothing of Django, portal/, workers/ or devstack/
(pyproject.toml's import-linter contracts check it)."""
