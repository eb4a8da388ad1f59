# Two entry points (see README): `make demo` runs the instructor's cycle on the shipped
# examples, `make test` runs the test suite. Both create .venv on first use.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint lab serve clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the local CPU wheel: otherwise pip may pick a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/autograder demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The grading service on the shipped examples: a scratch course, a token for each example
# student (printed, and in its tokens.csv), `autograder serve` on 127.0.0.1:8000 until Ctrl-C.
serve: $(STAMP)
	$(BIN)/autograder serve --demo

# The student's view: the handout folder (release notebook + README), not this repository.
lab: $(STAMP)
	$(BIN)/autograder release backprop
	$(BIN)/autograder handout backprop
	cd handout/backprop && $(abspath $(BIN))/jupyter lab --allow-root backprop.ipynb

clean:
	rm -rf gradebook.db submitted autograded results feedback exports handout .pytest_cache
