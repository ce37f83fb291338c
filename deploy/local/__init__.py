"""The embedded local stack: everything the portal needs on one offline machine.

`python -m deploy.local run` brings it up and runs the portal;
`python -m deploy.local test` brings up a private copy on other ports and runs
pytest against it. Each part is idempotent: what already works is reused.
"""
