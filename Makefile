# Thin wrappers: the scripts are the source of truth (and run without make).
.PHONY: check fix gen test demo ci

check:
	scripts/check

fix:
	scripts/fix

gen:
	PYTHON=.venv/bin/python scripts/gen_protos.sh

test:
	scripts/test

demo:
	scripts/demo

ci:
	.ci/run
