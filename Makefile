# The two commands of the README: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: demo test soak fuzz lint bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Sync this repository itself over file:// into ./.demo-root, every 5 s, until Ctrl-C.
demo: $(STAMP)
	$(PY) -m gitsync --repo "file://$(CURDIR)" --root "$(CURDIR)/.demo-root" --link latest \
		--period 5s --max-failures -1 --http-bind 127.0.0.1:8080 --http-metrics -v 1

# Installs what the tests need (pip packages; system servers they start) and runs everything.
test: $(STAMP)
	./tests/system-deps.sh
	$(PY) -m ruff check gitsync tests benchmarks fuzz
	$(PY) -m mypy gitsync
	$(PY) -m pytest -q -n 2 --dist loadfile

# The long reliability and memory cases (hostile giants, 200 MB files, many kills); see README.
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
	$(PY) -m ruff check gitsync tests benchmarks fuzz
	$(PY) -m mypy gitsync

# Benchmarks against the git CLI, measured in the same run (see benchmarks/README.md).
bench: $(STAMP)
	$(PY) benchmarks/run.py

# Regenerates the README's settings table from the settings model.
docs: $(STAMP)
	$(PY) -m gitsync.settings.docs

clean:
	rm -rf .demo-root benchmarks/.work .pytest_cache .mypy_cache .ruff_cache
