# Everything a developer or CI runs, in one place. Only python3 (with venv) and make are needed beforehand.
VENV := .venv
PYTHON := $(VENV)/bin/python
STACK ?= dev

.PHONY: venv test manifests config-reference dev bench

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt app/requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

LINT := --line-length 120 --target-version py311

## Every test: lint; the fast unit tier, which needs no service; the Pulumi program under mocks with offline schema
## validation; the app against real PostgreSQL, RabbitMQ and Redis on localhost (started from Debian packages when
## they are not running).
test: venv
	$(PYTHON) -m ruff check $(LINT) --select E,F,W,I,B,UP .
	$(PYTHON) -m ruff format --check $(LINT) .
	# Before any service is started: the unit tier needs none.
	$(PYTHON) -m pytest -ra tests/unit
	bash tests/ensure-services.sh
	# Separate processes: Pulumi's mock runtime and the app tests' event loops must not share one interpreter.
	$(PYTHON) -m pytest -ra tests/infra
	$(PYTHON) -m pytest -ra tests/app

## Write what a stack creates as manifests: make manifests STACK=prod (into manifests/prod/).
manifests: venv
	$(PYTHON) -m tools.render $(STACK) manifests/$(STACK)

## Regenerate the README's configuration reference from Pulumi.yaml and the stack files.
config-reference: venv
	$(PYTHON) -m tools.config_reference

## Run the whole platform locally on embedded defaults.
dev: venv
	$(PYTHON) -m app dev

## The benchmark against Celery and Dramatiq on the local services (minutes; not part of the tests).
bench: venv
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(PYTHON) -m bench.compare --runs 20000 --repeat 3
	$(PYTHON) -m bench.platform latency --runs 300
	$(PYTHON) -m bench.platform api --rate 300 --seconds 10
