# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: demo test soak soak-bench fuzz lint bench bench-relay docs lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The checkout is installed as a plain path entry (setuptools' compat editable mode), as the
# image's wheel is one: the default mode's import finder, run by every start of this venv's
# python, imported pathlib and importlib's machinery first (~12 ms of `python -c pass`), and the
# benchmark runs gitsync with this python. setuptools calls the mode transitional.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

# Sync this repository itself over file:// into ./.demo-root, every 5 s, until Ctrl-C.
demo: $(STAMP)
	$(PY) -m gitsync --repo "file://$(CURDIR)" --root "$(CURDIR)/.demo-root" --link latest \
		--period 5s --max-failures -1 --http-bind 127.0.0.1:8080 --http-metrics -v 1

# Installs what the tests need (pip packages; system servers they start) and runs everything.
test: $(STAMP)
	./tests/system-deps.sh
	$(PY) -m ruff check gitsync tests benchmarks tools fuzz
	$(PY) -m mypy gitsync
	$(PY) -m pytest -q -n 2 --dist loadfile

# The long reliability and memory cases (hostile giants, 200 MB files, many kills); see docs/reliability.md.
soak: $(STAMP)
	./tests/system-deps.sh
	$(PY) -m pytest -q -m soak

# Every fuzz target for FUZZ_SECONDS each (docs/fuzzing.md); its corpus grows in fuzz/corpus/,
# what it finds lands in fuzz/crashes/. FUZZ_TARGETS picks some: make fuzz FUZZ_TARGETS=trees
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= $(sort $(basename $(notdir $(filter-out %/__init__.py,$(wildcard fuzz/targets/*.py)))))
fuzz: $(STAMP)
	@for t in $(FUZZ_TARGETS); do echo "== $$t: $(FUZZ_SECONDS) s"; \
		$(PY) -m fuzz.run $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check gitsync tests benchmarks tools fuzz
	$(PY) -m mypy gitsync

# Benchmarks against the git CLI, measured in the same run (see benchmarks/README.md).
bench: $(STAMP)
	$(PY) benchmarks/run.py

# One gitsync driven like a busy repository for SOAK_MINUTES (default 30): memory, descriptors,
# disk, link checks, latency; writes benchmarks/soak/results.{json,md} (see docs/soak.md).
SOAK_MINUTES ?= 30
soak-bench: $(STAMP)
	$(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES)

# Relay mode's fleet benchmark: N sidecars direct vs through one relay (docs/relay.md).
bench-relay: $(STAMP)
	$(PY) benchmarks/bench_relay.py

# Regenerates docs/settings.md's tables from the settings model (tools/ is not in the wheel).
docs: $(STAMP)
	PYTHONPATH="$(CURDIR)" $(PY) tools/settings_docs.py

# Re-locks the image's runtime dependencies (requirements.lock: exact versions with hashes) from
# pyproject.toml. Existing pins are kept; `make lock LOCK_ARGS=--upgrade` moves them.
lock: $(STAMP)
	$(PY) -m pip install --quiet 'pip-tools>=7.4'
	$(PY) -m piptools compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock $(LOCK_ARGS) pyproject.toml

clean:
	rm -rf .demo-root benchmarks/.work benchmarks/.work-relay .pytest_cache .mypy_cache .ruff_cache
