# Everything a developer or CI runs, in one place. Only python3 (with venv) and make are needed beforehand.
VENV := .venv
PYTHON := $(VENV)/bin/python
STACK ?= dev

.PHONY: venv test manifests config-reference dev bench preview-comment

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

## A pull request comment from `pulumi preview --json` output: make preview-comment PREVIEW=preview.json STACK=prod.
## EVENTS=<the preview's --event-log file> adds the policy violations the JSON leaves out; COMMENT=<existing comment
## body> replaces this stack's section in it and keeps the other stacks'.
preview-comment: venv
	$(PYTHON) -m tools.preview_comment --stack $(STACK) $(if $(EVENTS),--events $(EVENTS)) \
		$(if $(COMMENT),--merge-into $(COMMENT)) $(PREVIEW)

## What a stack costs a month (at its autoscalers' minimum and maximum) and how fast it scales out under a burst:
## make capacity STACK=prod. SPOT=0.65 prices compute at spot rates.
.PHONY: capacity
capacity: venv
	$(PYTHON) -m capacity $(STACK) $(if $(SPOT),--spot-discount $(SPOT))

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
