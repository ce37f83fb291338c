"""The portal's core: what every feature package may use and that knows no feature.

crypto (secrets at rest), env (settings from the environment), jsonlog (JSON log
lines), sending (the one way a task leaves, within a budget), ratelimit, health
(the probes /healthz and the health page run; does I/O), errors (RequestRefused).
May import deploy/ and Django; never a feature package, a view, the API or workers/.
"""
