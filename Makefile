# Two entry points for a fresh Debian 12 machine (as root):
#   make demo   install, then plan -> apply -> plan (no changes) of playbooks/demo.yml locally
#   make test   install everything the tests need (apt, pip), then run the whole suite
PYTHON ?= python3
DEMO_DIR ?= /tmp/provision-demo
PYTEST_ARGS ?=

.PHONY: install install-test demo test lint native clean

# Debian's own python3 refuses pip installs outside a venv (PEP 668); this
# tool is installed for root like a system tool, so allow it there.
PIP_INSTALL = $(PYTHON) -m pip install -q --root-user-action=ignore
PROVISION = $(PYTHON) -m provisioner

install:
	$(PIP_INSTALL) -e . || $(PIP_INSTALL) --break-system-packages -e .

install-test:
	bash .ci/install.sh

demo: install
	@echo "== provision plan (first run: everything to create)"
	$(PROVISION) plan playbooks/demo.yml -e demo_dir=$(DEMO_DIR)
	@echo "== provision apply"
	$(PROVISION) apply playbooks/demo.yml -e demo_dir=$(DEMO_DIR)
	@echo "== provision plan again: must show no changes (exit 0 with --detailed-exitcode)"
	$(PROVISION) plan playbooks/demo.yml -e demo_dir=$(DEMO_DIR) --detailed-exitcode

native:
	$(MAKE) -C native

lint:
	ruff check provisioner modules tests bench

test: install-test
	$(MAKE) -C native
	ruff check provisioner modules tests bench
	$(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	$(MAKE) -C native clean || true
	rm -rf build dist *.egg-info .pytest_cache
