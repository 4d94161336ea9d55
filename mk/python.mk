# `make test-python PY=3.14`: whether requires-python's ">=3.11" tells the truth past the 3.11 of
# Debian bookworm that development, CI and the image use. `make test` (requirements.lock's pins,
# ruff, mypy, the test suite) in a Debian chroot with python$(PY) (trixie for 3.13, forky for
# later ones), made by debootstrap under build/python-$(PY) the first time (mk/test-python.sh).
# Needs root; tests HEAD, not the work tree. Not part of `make test` or CI (about 12 minutes
# here, the first debootstrap and the install included). Included by the Makefile.
PY ?= 3.13

.PHONY: test-python
test-python: ## make test on another Python (PY=3.13: Debian trixie's, 3.14: forky's) in a chroot; root
	mk/test-python.sh $(PY)
