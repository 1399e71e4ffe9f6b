# kroute: build the nginx dynamic module, its companion tools and tests.
#
#   make                  module against Debian's nginx-dev
#   make NGINX_SRC=dir    module against an upstream nginx source tree
#   make test             everything t/ holds, under prove
#   make demo             nginx + kroute + mock provider + recorded traffic

SHELL        := /bin/bash
NGINX_SRC    ?= /usr/share/nginx/src
NGINX_BIN    ?= /usr/sbin/nginx
BUILD        := build
NGX_BUILD    := $(BUILD)/nginx
MODULE       := $(BUILD)/ngx_http_kroute_module.so

CC           ?= cc
CFLAGS_PURE  := -std=c99 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -O2 -g -Isrc
ASAN_FLAGS   := -fsanitize=address,undefined -fno-omit-frame-pointer -O1

PURE_SRCS    := $(filter-out src/kr_classify_weights.c,$(wildcard src/kr_*.c))
WEIGHTS_SRC  := $(wildcard src/kr_classify_weights.c)
UNIT_SRCS    := $(wildcard t/unit/test_*.c)
UNIT_BINS    := $(patsubst t/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))
ASAN_BINS    := $(patsubst t/unit/%.c,$(BUILD)/unit-asan/%,$(UNIT_SRCS))
TOOL_SRCS    := $(wildcard tools/kr-*.c)
TOOL_BINS    := $(patsubst tools/%.c,$(BUILD)/%,$(TOOL_SRCS))
AGG_SRCS     := $(wildcard src/agg/*.c)
AGG_BIN      := $(BUILD)/kroute-agg

MODULE_SRCS  := config ngx_kroute_module.c $(wildcard src/*.c src/*.h)

.PHONY: all module unit unit-asan tools agg test test-asan demo bench \
        deps clean weights install

all: module tools agg

module: $(MODULE)

$(NGX_BUILD)/Makefile: config
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && \
	    if [ -f conf_flags ]; then \
	        . ./conf_flags; \
	    else \
	        NGX_CONF_FLAGS="--with-compat --with-http_ssl_module"; \
	    fi; \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --add-dynamic-module=$(CURDIR) > configure.log 2>&1 || \
	    { cat configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/Makefile $(MODULE_SRCS)
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules
	cp $(NGX_BUILD)/objs/ngx_http_kroute_module.so $@.tmp && mv -f $@.tmp $@

$(BUILD)/unit/%: t/unit/%.c $(PURE_SRCS) $(WEIGHTS_SRC) $(wildcard src/kr_*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_PURE) -o $@ $< $(PURE_SRCS) $(WEIGHTS_SRC) -ljansson -lm

$(BUILD)/unit-asan/%: t/unit/%.c $(PURE_SRCS) $(WEIGHTS_SRC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_PURE) $(ASAN_FLAGS) -o $@ $< $(PURE_SRCS) $(WEIGHTS_SRC) \
	    -ljansson -lm

unit: $(UNIT_BINS)

unit-asan: $(ASAN_BINS)

$(BUILD)/kr-%: tools/kr-%.c $(PURE_SRCS) $(WEIGHTS_SRC)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_PURE) -Itools -o $@ $< $(PURE_SRCS) $(WEIGHTS_SRC) \
	    -ljansson -lm

tools: $(TOOL_BINS)

$(AGG_BIN): $(AGG_SRCS) $(wildcard src/agg/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_PURE) -Isrc/agg -o $@ $(AGG_SRCS) -lhiredis -ljansson -lm

agg: $(if $(AGG_SRCS),$(AGG_BIN))

deps:
	./.ci/deps

test: deps all unit
	prove -I t/lib t/

test-asan: unit-asan
	KR_UNIT_DIR=$(BUILD)/unit-asan prove -I t/lib t/unit.t

demo: deps all
	./demo/run

bench: all
	./bench/run

weights: $(BUILD)/kr-train
	$(BUILD)/kr-train -o conf-examples/kroute-classifier.weights \
	    -c src/kr_classify_weights.c t/fixtures/prompts/train.jsonl

PREFIX       ?= /usr/local
MODULES_DIR  ?= /usr/lib/nginx/modules

install: all
	install -d $(DESTDIR)$(MODULES_DIR) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(MODULE) $(DESTDIR)$(MODULES_DIR)/
	install -m 755 $(AGG_BIN) $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf $(BUILD)
