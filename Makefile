# metamorph: the two commands a newcomer needs (see README.md).
#   make demo   install what is missing, build, then the shipped shapes model (models/shapes)
#               answers a question about a picture and draws one (demo-red-star.png)
#   make test   everything CI runs
SHELL := /bin/bash
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
PYTHON ?= python3
# The shipped library carries the Swift runtime statically: a C host needs only libopenblas + libomp.
DIST_FLAGS := -c release -Xswiftc -static-stdlib
TEST_FLAGS := -c release -Xswiftc -enable-testing --scratch-path .build-test
CKPT := .build/checkpoints
# Real files nobody here wrote (the LLaMA-3 tokenizer ...) live beside the checkout, as in CI.
SHARED ?= $(abspath ../shared)
TOKENIZER := $(SHARED)/fixtures/tokenizer/meta-llama-3.1-8b-instruct/tokenizer.json

.PHONY: deps build demo test test-swift test-c test-python checkpoints clean

deps:
	@pkgs=""; for p in libopenblas-dev libomp-dev pkg-config libpng-dev libjpeg-dev; do \
	  dpkg -s $$p >/dev/null 2>&1 || pkgs="$$pkgs $$p"; done; \
	if [ -n "$$pkgs" ]; then echo "installing$$pkgs"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkgs; fi
	@$(PYTHON) -c "import numpy" 2>/dev/null || $(PYTHON) -m pip install -q numpy
	@$(PYTHON) -c "import pytest" 2>/dev/null || $(PYTHON) -m pip install -q pytest
	@# Pillow: the shapes-model tests read examples/images/*.png (they would skip without it)
	@$(PYTHON) -c "import PIL" 2>/dev/null || $(PYTHON) -m pip install -q Pillow

build: deps
	$(SWIFT) build $(DIST_FLAGS)
	@mkdir -p bin && ln -sf ../.build/release/metamorph-cli bin/metamorph
	@echo "built bin/metamorph and .build/release/libmetamorph.so"

checkpoints:
	@[ -f $(CKPT)/.complete ] || { $(PYTHON) tools/make_checkpoints.py --out $(CKPT) --tokenizer $(TOKENIZER) && touch $(CKPT)/.complete; }

# No --model: the CLI uses the shipped models/shapes (and its visualizer/ for --out).
demo: build
	@echo '$$ bin/metamorph run --image examples/images/purple-star.png --prompt "What color is the shape?"'
	@bin/metamorph run --image examples/images/purple-star.png --prompt "What color is the shape?"
	@echo '$$ bin/metamorph run --image examples/images/purple-star.png --prompt "What shape is this?"'
	@bin/metamorph run --image examples/images/purple-star.png --prompt "What shape is this?"
	@echo '$$ bin/metamorph run --image examples/images/purple-star.png --prompt "Describe the image."'
	@bin/metamorph run --image examples/images/purple-star.png --prompt "Describe the image."
	@echo '$$ bin/metamorph run --prompt "Generate an image of a red star." --seed 1 --out demo-red-star.png'
	@bin/metamorph run --prompt "Generate an image of a red star." --seed 1 --out demo-red-star.png

test-swift: deps checkpoints
	METAMORPH_TEST_CKPT_DIR=$(CURDIR)/$(CKPT) $(SWIFT) test $(TEST_FLAGS)

test-c: build checkpoints
	bash Tests/c/run.sh .build/release $(CKPT)

test-python: build checkpoints
	METAMORPH_LIBRARY=$(CURDIR)/.build/release/libmetamorph.so METAMORPH_TEST_CKPT_DIR=$(CURDIR)/$(CKPT) \
	  $(PYTHON) -m pytest -q bindings/python/tests

test: test-swift test-c test-python

clean:
	rm -rf .build .build-test bin
