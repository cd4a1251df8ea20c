# medge: two commands on a fresh machine (python3 + python3-venv, make, Node.js/npm):
#   make demo   broker + ingest + simulated devices + live monitor
#   make test   the whole test suite (firmware also inside the MicroPython VM)
# Each bootstraps .venv (and the pinned MicroPython VM from npm) on first use;
# `make test` first checks the system packages (tests/sysdeps.sh) and installs
# mosquitto & co. with apt-get when root or passwordless sudo, else stops at once
# naming the command (MEDGE_NO_INSTALL=1: never install).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.medge-installed
MPY_STAMP := tests/mpy/node_modules/.medge-installed
DEMO_ARGS ?= --devices 5 --duration 30
# The suite runs in 3 pytest-xdist workers: on 2 cores most tests wait on brokers,
# servers and child processes, and the suite fits its 10-minute budget only so.
# Every test makes its own broker/server/folders on free ports, so they can run at once.
PYTEST_ARGS ?= -n 3

.PHONY: demo test sysdeps lint bench eval eval-qrs eval-model eval-sim eval-rhythm eval-rhythm-loo eval-fuzz eval-vitals eval-alerts model tables venv mpy clean help

help:
	@echo "make demo | test | lint | bench | eval | eval-qrs DATA=dir | model DATA=dir | eval-model DATA=dir | tables | clean"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "medge: could not create $(VENV); on Debian/Raspberry Pi OS: sudo apt install python3-venv"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[host,dev,serial,pg]'
	@touch $@

venv: $(STAMP)

$(MPY_STAMP): tests/mpy/package.json tests/mpy/package-lock.json
	@command -v npm >/dev/null || { echo "medge: npm (Node.js) is needed for the MicroPython VM tests"; exit 1; }
	npm ci --prefix tests/mpy --no-audit --no-fund --loglevel=error
	@touch $@

mpy: $(MPY_STAMP)

demo: $(STAMP)
	$(BIN)/medge demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(PY) -m models.filterdesign --check

# Regenerate firmware/signal/filter_tables.py from the filter designs (models/filterdesign.py).
tables: $(STAMP)
	$(PY) -m models.filterdesign --write

# System packages the tests need (mosquitto, Node.js/npm, python3-venv): seconds,
# so a missing binary stops `make test` before the venv install, never after it.
sysdeps:
	@PYTHON='$(PYTHON)' MEDGE_VENV='$(VENV)' bash tests/sysdeps.sh

ifneq ($(filter test,$(MAKECMDGOALS)),)
$(STAMP) $(MPY_STAMP): | sysdeps
endif

# pytest exits 5 when it collected no test: make treats that as a failure.
test: sysdeps $(STAMP) $(MPY_STAMP) lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: sysdeps $(STAMP) $(MPY_STAMP)
	$(PY) -m models.bench
	$(PY) -m host.bench_fleet
	$(PY) -m host.bench_ingest --duration 60
	$(PY) -m host.bench_advice
	$(PY) -m host.bench_ota

# Slow evaluations on the PhysioNet data beside the repo (not in a clone).
DATA ?= ../shared/data/mitdb
EVAL_STAMP := $(VENV)/.medge-eval-installed

$(EVAL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[host,dev,serial,eval]'
	@touch $@

# QRS detection: medge vs wfdb xqrs vs neurokit2, DS1 + noise stress, 360 and 250 Hz.
eval-qrs: $(EVAL_STAMP)
	$(PY) -m models.eval_qrs $(DATA) --fs 360 250

# The beat classifier: TensorFlow comes with the train extra (never needed to
# run the device or the tests).
TRAIN_STAMP := $(VENV)/.medge-train-installed

$(TRAIN_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[host,dev,serial,train]'
	@touch $@

# Train (leave-records-out validation, then all of DS1), quantize to int8 and
# export models/beatnet.tflite + models/beatnet.json.
model: $(TRAIN_STAMP)
	$(PY) -m models.train $(DATA)

# models/reports/beat_model.md: per-fold and pooled figures, float vs int8,
# baseline, size, MACs, arena, latency, engine-vs-LiteRT bit-exactness on all DS1.
eval-model: $(TRAIN_STAMP) $(MPY_STAMP)
	$(PY) -m models.eval_model $(DATA)

# The device QRS detector on virtual patients (every rhythm and scenario,
# 24/12/6 dB real noise, 250 and 360 Hz) against the simulator's ground truth.
eval-sim: $(STAMP)
	$(PY) -m models.eval_sim

# Rhythm events (models/reports/rhythm.md): AF duration Se/+P, VT and pause episodes on
# DS1 through the device's rhythm code, and the plain RR-irregularity peer in the same run.
eval-rhythm: $(STAMP)
	$(PY) -m models.eval_rhythm $(DATA)

# Leave-records-out rhythm-aware beat classes and AF (models/reports/beat_loo_rhythm.md):
# trains the make-eval-model folds again (TensorFlow: the train extra).
eval-rhythm-loo: $(TRAIN_STAMP)
	$(PY) -m models.eval_loo_rhythm $(DATA)

# Vital signs (models/reports/vitals.md + Bland-Altman PNGs): BIDMC 01-26 respiratory and
# pulse rate against the annotations and numerics, neurokit2 in the same run, and every
# simulator scenario at 24/12/6 dB.  DATA=../shared/data/bidmc
eval-vitals: $(EVAL_STAMP)
	$(PY) -m models.eval_vitals $(DATA)

# Property-based fuzzing (hypothesis) of every message type and of ingest into a real
# SQLite store: >= 10,000 cases per property, summary printed, exit 1 on any failure.
FUZZ_CASES ?= 10000
eval-fuzz: $(STAMP)
	$(PY) -m host.fuzz_ingest --cases $(FUZZ_CASES)

# Alarm burden on a simulated ward (24 patients x 24 h, accelerated, ~2 min): medge's
# advice engine against a plain threshold monitor in the same run -> models/reports/alerts.md.
eval-alerts: $(STAMP)
	$(PY) -m host.eval_alerts --patients 24 --hours 24 --report models/reports/alerts.md

eval: eval-qrs eval-model eval-sim eval-fuzz eval-alerts

clean:
	rm -rf $(VENV) tests/mpy/node_modules .pytest_cache .ruff_cache var
