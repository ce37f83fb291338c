"""The embedded local stack: everything the portal needs on one offline machine
(local AWS plane, base images, stand-ins, Postgres, the runner).

`python -m devstack run` brings it up and runs the portal;
`python -m devstack test` brings up a private copy on other ports and runs
pytest against it. Each part is idempotent: what already works is reused.

Development only, never in the portal image: it may import deploy/ and Django
(health.py, named by dotted path in local-mode settings), while portal/,
workers/ and deploy/ never import it (import-linter, pyproject.toml).
"""
