# Streaming ETL — every target does its own set-up; `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
MVN := mvn -q -B
STAMP_VENV := $(VENV)/.installed
STAMP_JARS := .jars/.resolved
CONF ?= conf/local.yaml

.PHONY: help setup jars run test test-unit test-integration check fmt bench bench-quick replay dist docker-test stack-up stack-down clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP_VENV): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[local,dev]'
	@touch $@

UDF_SOURCES := $(shell find jvm/udf/src -name '*.java')

$(STAMP_JARS): etl/jvm/pom.xml etl/formats/hudi/pom.xml jvm/broker/pom.xml jvm/udf/pom.xml $(UDF_SOURCES)
	@command -v mvn >/dev/null || { echo "need Maven (mvn) and a JDK 17 on PATH"; exit 1; }
	rm -rf .jars/spark .jars/hudi .jars/broker jvm/udf/target
	$(MVN) -f etl/jvm/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars/spark
	$(MVN) -f etl/formats/hudi/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars/hudi
	$(MVN) -f jvm/broker/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/.jars/broker
	$(MVN) -f jvm/udf/pom.xml package -DskipTests
	cp jvm/udf/target/etl-udf-*.jar .jars/spark/
	@touch $@

setup: $(STAMP_VENV) $(STAMP_JARS) ## Python venv + Maven-resolved JVM jars

jars: $(STAMP_JARS) ## resolve the JVM artifacts into .jars/ (Spark side, Hudi, broker side) and build our UDF jar

run: setup ## start the local stack, produce demo events and changes, ingest them into Iceberg, Delta and Hudi tables, show them, maintain them
	$(PY) -m devtools.demo --conf $(CONF)

# Tests marked `hudi` need a session hosting Hudi (its session catalog and Kryo are fixed at
# JVM start), so they run in a pytest run of their own, beside the main one (each has its own
# Spark session and local stack); its report is printed after the main run's.
test: setup ## the whole test suite (unit + integration on the local stack; Hudi run beside it)
	@$(PY) -m pytest -q -p no:cacheprovider -m hudi > .pytest-hudi.log 2>&1 & hudi=$$!; \
	$(PY) -m pytest -q -m "not hudi"; main=$$?; \
	wait $$hudi; status=$$?; \
	echo "== the Hudi run (pytest -m hudi):"; cat .pytest-hudi.log; \
	test $$main -eq 0 -a $$status -eq 0

test-unit: setup ## tests that need neither broker nor registry (main run, then Hudi run)
	$(PY) -m pytest -q -m "not integration and not hudi"
	$(PY) -m pytest -q -m "hudi and not integration"

test-integration: setup ## tests on the real local stack (none needs Hudi)
	$(PY) -m pytest -q -m "integration and not hudi"

check: setup ## ruff + mypy (strict on the packages)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

fmt: setup ## format and autofix
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Iceberg: every path; Delta and Hudi: their write limit against the pipeline end to end (the
# decode paths do not depend on the format); then each format's sinks against its own
# streaming sink (bench/formats.json)
BENCH_FORMAT_PATHS := kafka_noop,write_limit,e2e
bench: setup ## benchmarks (not part of make test); writes bench/results*.json, bench/formats.json, bench/maintenance.json and bench/erasure.json
	$(PY) -m bench.run
	$(PY) -m bench.run --format delta --records 1000000 --paths $(BENCH_FORMAT_PATHS)
	$(PY) -m bench.run --format hudi --records 1000000 --paths $(BENCH_FORMAT_PATHS)
	$(PY) -m bench.formats
	$(PY) -m bench.maintenance
	$(PY) -m bench.erasure

bench-quick: setup ## a small benchmark run, as a smoke check
	$(PY) -m bench.run --quick

# The wheel holds etl/, jobs/ and transforms/ (with the poms as package data); devtools/, bench/
# and tests/ stay out. setuptools builds in ./build, which could leak stale files into the wheel.
dist: $(STAMP_VENV) ## build the project wheel into dist/
	rm -rf build dist
	$(PY) -m pip wheel -q --no-deps -w dist .
	rm -rf build
	@ls dist/*.whl

# Builds a stand-in Spark base image from Debian packages (no image registry is reachable here),
# the project image on it with podman (wheelhouse and jars prepared outside, nothing downloaded
# in the build), then runs the ingest job in a container against the local stack and reads the
# tables back from the host. podman's storage, the wheelhouse and the check's tables stay in .docker/.
docker-test: setup dist ## build the container image (stand-in base, podman) and check an ingest in it against the local stack
	$(PY) -m devtools.docker_check

stack-up: setup ## start the local stack in the background (state in .stack/)
	$(PY) -m devtools.devstack up --workdir .stack --broker-jars .jars/broker

stack-down: ## stop the local stack
	@if [ -x $(PY) ]; then $(PY) -m devtools.devstack down --workdir .stack; fi

clean: stack-down ## remove local state (venv and jars stay)
	rm -rf .warehouse .checkpoints .lake .demo .stack .bench spark-warehouse
