# `make peers`, `make compare-peers`: the serving frameworks a user would pick instead (MLServer,
# BentoML, LitServe, PyTriton) and Granian, each in its own virtualenv under build/peers/, never
# in .venv: benchmark subjects, not dependencies. Not part of `make test` or CI. Included by the
# Makefile; uses $(PYTHON), $(BIN), $(DEV_STAMP), $(REPORTS_DIR), and $(WRK_DIR), $(WRK) and
# `bodies` from mk/stress.mk.
PEERS_DIR ?= build/peers
PEER_NAMES := mlserver bentoml litserve pytriton granian
PEERS_ROUNDS ?= 3
PEERS_DURATION ?= 10
PEERS_CONNECTIONS ?= 64
PEERS_GROUPS ?=
PEER_STAMPS := $(foreach peer,$(PEER_NAMES),$(PEERS_DIR)/$(peer)/.installed)
# What each virtualenv must import, the project on PYTHONPATH, before it counts as installed.
PEER_MODULE_mlserver := benchmarks.peers.mlserver_runtime
PEER_MODULE_bentoml := benchmarks.peers.bentoml_service
PEER_MODULE_litserve := benchmarks.peers.litserve_server
PEER_MODULE_pytriton := benchmarks.peers.pytriton_server
PEER_MODULE_granian := app.main

GRANIAN_RELIABILITY ?= $(PEERS_DIR)/granian-reliability.xml

.PHONY: peers compare-peers granian-reliability
peers: $(PEER_STAMPS) ## install the peer frameworks and Granian into build/peers/ (a few minutes)

# A peer that fails to install leaves no stamp: compare-peers then reports it as not installed.
$(PEERS_DIR)/%/.installed: benchmarks/peers/requirements/%.txt
	rm -rf $(PEERS_DIR)/$*
	$(PYTHON) -m venv $(PEERS_DIR)/$*
	$(PEERS_DIR)/$*/bin/pip install --quiet --upgrade pip
	$(if $(filter granian,$*),$(PEERS_DIR)/$*/bin/pip install --quiet -c requirements.lock -e .)
	$(PEERS_DIR)/$*/bin/pip install --quiet -r $<
	PYTHONPATH=. $(PEERS_DIR)/$*/bin/python -c 'import $(PEER_MODULE_$*)'
	touch $@

compare-peers: bodies | $(DEV_STAMP) ## the service vs MLServer, BentoML, LitServe, PyTriton, and gunicorn vs Granian (about 25 minutes)
	-$(MAKE) --no-print-directory --keep-going peers
	-$(MAKE) --no-print-directory granian-reliability
	$(BIN)/python -m benchmarks.peers.run --rounds $(PEERS_ROUNDS) --duration $(PEERS_DURATION) \
		--connections $(PEERS_CONNECTIONS) --wrk $(WRK) --wrk-dir $(WRK_DIR) --out $(REPORTS_DIR) \
		$$(test -f $(GRANIAN_RELIABILITY) && echo --reliability $(GRANIAN_RELIABILITY)) \
		$(if $(PEERS_GROUPS),--groups $(PEERS_GROUPS))

# `make compare COMPARE_PEERS=1` runs this too (off by default: it installs five frameworks and
# takes about 25 minutes more).
COMPARE_PEERS ?=
compare: $(if $(filter 1,$(COMPARE_PEERS)),compare-peers)

# The real-server suites, unchanged, against the app under Granian: which behaviours carry over.
granian-reliability: $(PEERS_DIR)/granian/.installed | $(DEV_STAMP) ## tests/test_server.py and test_reliability.py against Granian (fails where a behaviour does not hold)
	rm -f $(GRANIAN_RELIABILITY)
	$(BIN)/python -m pytest -p benchmarks.peers.under_granian -p no:cacheprovider -q \
		--junitxml=$(GRANIAN_RELIABILITY) tests/test_server.py tests/test_reliability.py

# Granian runs the project's own app: reinstall when its requirements move.
$(PEERS_DIR)/granian/.installed: requirements.lock pyproject.toml
