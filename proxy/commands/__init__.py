"""The ``egressguard`` command line and what only its commands use: the demo, ``scan``, the agent's
environment, a local certificate authority, worker processes and structured logs."""
