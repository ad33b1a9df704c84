# ragdesk: `make run` starts the whole app with a demo tenant; `make test` runs every test.
.PHONY: run test lint fmt lock messages down bench

run:
	scripts/env-run scripts/run-app

test:
	scripts/env-run scripts/run-tests $(ARGS)

lint:
	scripts/env-run ruff check .

fmt:
	scripts/env-run ruff format .

# Recompile translations after editing locale/*/LC_MESSAGES/django.po.
messages:
	scripts/env-run python scripts/translations.py

lock:
	.venv/bin/pip freeze --exclude-editable | sed 's/+cpu$$//' | sort > requirements.lock.new
	(echo "# pip constraints: exact versions for a reproducible install (regenerate: make lock)"; cat requirements.lock.new) > requirements.lock
	rm requirements.lock.new

down:
	.venv/bin/python scripts/postgres_redis.py down
