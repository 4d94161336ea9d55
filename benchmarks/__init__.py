"""Load-test tooling for the served API: wrk bodies, the stress run and its report."""
