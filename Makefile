# Shortcuts for the scripts; every target works without make too (see README).
.PHONY: demo test chaos services stop-services lint

demo:            ## the quickstart: services, workers, sample corpus, a search
	bash scripts/demo.sh

test:            ## services, then the whole test suite (what CI runs)
	bash scripts/test.sh

chaos:           ## the fault-injection suite (restarts services; runs alone)
	bash scripts/chaos.sh

services:        ## start RabbitMQ and Postgres+pgvector without Docker
	bash scripts/services.sh

stop-services:   ## stop the Postgres that services started
	bash scripts/services.sh stop

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
