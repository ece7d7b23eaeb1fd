# The two commands of the README: `make demo` (the first one to run) and `make test`.
# `make run` runs every connector on the example configuration, written once into run/.
.PHONY: demo run test unit bench install services

install:
	@scripts/bootstrap.sh

services:
	@scripts/ensure-services.sh

demo: install
	.venv/bin/centaure demo

run: install
	@[ -f run/settings.ini ] || .venv/bin/centaure init run
	.venv/bin/twistd -n --pidfile= centaure-all -c run/settings.ini

unit: install
	.venv/bin/pytest -q tests/unit

test: install services
	.venv/bin/lint-imports
	.venv/bin/pytest -q --durations=30 tests

bench: install services
	@for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done
