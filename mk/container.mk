# Container image, built with buildah (no Docker engine needed). Included by the Makefile.
# The base image is made locally by debootstrap the first time (a few minutes), then reused, and
# passed explicitly: the Dockerfile's own default is the public python:3.11-slim, which a machine
# without a registry cannot pull.
#   IMAGE=...       tag to build       BASE_IMAGE=...  base of every stage (e.g. python:3.11-slim)
IMAGE ?= localhost/latam-delay:latest
BASE_IMAGE ?= localhost/latam-python-base:bookworm

.PHONY: image
image: ## build the container image with buildah (IMAGE=, BASE_IMAGE=)
	IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) deploy/container/test-image.sh --build-only

.PHONY: image-test
image-test: ## build the image and serve /predict from it (slow)
	IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) deploy/container/test-image.sh

.PHONY: image-report
image-report: ## image-test, writing the image's size and time to ready to reports/image.md (slow)
	REPORT=$(REPORTS_DIR)/image.md IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) deploy/container/test-image.sh
