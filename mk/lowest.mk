# `make test-lowest`: whether pyproject.toml's lower bounds tell the truth. The project with its dev
# extra goes into $(LOWEST_VENV), every direct dependency at the lowest version its range admits
# (uv's --resolution lowest-direct; requirements.lock is not read), and the test modules that
# import app/ run there; the training and export ones (test_export.py, test_evaluate.py) do not.
# Not part of `make test` or CI (about 7 minutes here, the install included). Included by the
# Makefile; uses $(PYTHON).
LOWEST_VENV ?= build/lowest
UV_VERSION ?= 0.13.9
LOWEST_TESTS = $(filter-out tests/test_export.py tests/test_evaluate.py, \
	$(shell grep -lE '^(from|import) app\b' tests/test_*.py))

$(LOWEST_VENV)/.installed: pyproject.toml
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install --quiet uv==$(UV_VERSION)
	$(LOWEST_VENV)/bin/uv pip install --quiet --python $(LOWEST_VENV)/bin/python \
		--resolution lowest-direct -e '.[dev]'
	touch $@

.PHONY: test-lowest
test-lowest: $(LOWEST_VENV)/.installed ## the service's tests with every dependency at its lower bound
	$(LOWEST_VENV)/bin/uv pip list --quiet --python $(LOWEST_VENV)/bin/python > $(LOWEST_VENV)/versions.txt
	$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)
